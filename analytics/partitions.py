"""The event table's monthly partitions: created ahead, and detached once past retention.

``analytics_event`` is partitioned by range of ``occurred_at``, one partition per UTC month
named ``analytics_event_pYYYYMM`` (migration 0003 creates the first ones), plus
``analytics_event_default``, which takes any row no partition covers so that an insert never
fails.

- The daily beat task (``partitions_maintain``) creates the partitions from the current month to ``ANALYTICS_PARTITIONS_AHEAD`` months ahead.
  A month whose rows already sit in the default partition (the beat was down when it began)
  gets them moved, in one transaction: the table is created on its own with a CHECK constraint
  matching its bounds, the rows are moved out of the default partition into it, and it is
  attached (the constraint spares ATTACH its validation scan; PostgreSQL's documented way).
  ATTACH takes an ACCESS EXCLUSIVE lock on the default partition (normally empty, so held for
  milliseconds) and a SHARE UPDATE EXCLUSIVE one on the parent: inserts into the other
  partitions go on meanwhile.
- The compliance retention run (``partitions_retire``, the events' ``expirer``) detaches, then
  drops, the partitions wholly older than ``RETENTION_DAYS["events"]``
  (DETACH … CONCURRENTLY is not allowed beside a default partition, so a plain DETACH, which is
  instant once it holds its lock), deletes the default partition's rows and the first
  engagements older than the oldest month kept, and the rollups older than
  ``ANALYTICS_ROLLUP_RETENTION_DAYS``.

Every DDL statement waits at most ``LOCK_TIMEOUT`` for its lock: a lock request queued behind a
long reader would block every later query on the table; failing and retrying tomorrow is
cheaper.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from analytics import rollups

PARENT = "analytics_event"
DEFAULT = "analytics_event_default"
_NAME = re.compile(r"^analytics_event_p(\d{4})(\d{2})$")
LOCK_TIMEOUT = "5s"


@dataclass
class MaintenanceResult:
    created: list[str] = field(default_factory=list)
    moved: int = 0
    dropped: list[str] = field(default_factory=list)
    rollups_deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "moved": self.moved,
            "dropped": self.dropped,
            "rollups_deleted": self.rollups_deleted,
        }


def partition_name(month: dt.date) -> str:
    return f"{PARENT}_p{month:%Y%m}"


def month_start(at: dt.datetime | dt.date) -> dt.date:
    if isinstance(at, dt.datetime):
        at = at.astimezone(dt.UTC).date()
    return at.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    return (month + dt.timedelta(days=32)).replace(day=1)


def _bound(month: dt.date) -> dt.datetime:
    return dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)


def partitions_list() -> dict[str, dt.date]:
    """The monthly partitions attached to the event table: name -> the month it holds."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [PARENT],
        )
        names = [name for (name,) in cursor.fetchall()]
    months = {}
    for name in names:
        if match := _NAME.match(name):
            months[name] = dt.date(int(match[1]), int(match[2]), 1)
    return months


def partitions_ensure(
    *, now: dt.datetime | None = None, since: dt.datetime | None = None
) -> MaintenanceResult:
    """Creates the missing partitions from ``now``'s month (or ``since``'s, for a backfill) to
    ANALYTICS_PARTITIONS_AHEAD months after ``now``'s, moving into each the rows the default
    partition holds for its month."""
    result = MaintenanceResult()
    existing = set(partitions_list())
    now = now or timezone.now()
    month, last = month_start(since or now), month_start(now)
    for _ in range(settings.ANALYTICS_PARTITIONS_AHEAD):
        last = next_month(last)
    while month <= last:
        name = partition_name(month)
        if name not in existing:
            result.moved += _create(name, month)
            result.created.append(name)
        month = next_month(month)
    return result


def _create(name: str, month: dt.date) -> int:
    """Creates, fills from the default partition and attaches one month; returns the rows
    moved."""
    lo, hi = _bound(month), _bound(next_month(month))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # The default partition first, in the mode ATTACH needs anyway: from here no insert
        # lands in it until the attach commits, so no row of this month slips in behind the move.
        cursor.execute(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
        cursor.execute(
            f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
            f"CONSTRAINT {name}_bounds CHECK (occurred_at IS NOT NULL "
            f"AND occurred_at >= {_lit(lo)} AND occurred_at < {_lit(hi)}))"
        )
        move = (
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE occurred_at >= %s "  # noqa: S608
            f"AND occurred_at < %s RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )
        cursor.execute(move, [lo, hi])
        moved = int(cursor.rowcount)
        cursor.execute(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ({_lit(lo)}) TO ({_lit(hi)})"
        )
        # Attached, the partition constraint holds the bounds: the CHECK is redundant now.
        cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bounds")
    return moved


def _lit(at: dt.datetime) -> str:
    """A timestamp literal for DDL, which takes no parameters."""
    return f"'{at.isoformat()}'"


def partitions_retire(*, now: dt.datetime | None = None) -> MaintenanceResult:
    """Detaches and drops the partitions wholly older than RETENTION_DAYS["events"], with the
    default partition's rows and the first engagements before the oldest month kept, and
    deletes the rollups older than ANALYTICS_ROLLUP_RETENTION_DAYS.

    Called by the compliance retention run (the events' ``expirer``), the one path that
    removes events."""
    now = now or timezone.now()
    result = MaintenanceResult()
    # Everything before the cutoff's month goes: that month still holds rows to keep.
    keep_from = rollups.events_kept_from(now)
    if keep_from is None:
        keep_from = dt.datetime.min.replace(tzinfo=dt.UTC)
    for name, month in sorted(partitions_list().items(), key=lambda item: item[1]):
        if _bound(next_month(month)) > keep_from:
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {name}")
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {name}")
        result.dropped.append(name)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {DEFAULT} WHERE occurred_at < %s", [keep_from])  # noqa: S608
        cursor.execute("DELETE FROM analytics_firstengagement WHERE occurred_at < %s", [keep_from])
    result.rollups_deleted = rollups.rollups_prune(
        now=now, days=settings.ANALYTICS_ROLLUP_RETENTION_DAYS
    )
    return result


def partitions_maintain(*, now: dt.datetime | None = None) -> dict[str, Any]:
    """The daily task: partitions ahead. Retiring them is the compliance retention run's (the
    events' ``expirer`` calls ``partitions_retire``): one path removes events."""
    return partitions_ensure(now=now).as_dict()
