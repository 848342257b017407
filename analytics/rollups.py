"""The rollups: hourly and daily counts per dimension, kept up to date from the event table.

How a run works (``rollup_run``, every minute from the beat):

1. It takes a transaction-level advisory lock, so that two runs (or a run and a rebuild) never
   interleave, and reads the watermark ``W`` (``RollupWatermark("events")``).
2. ``H = pg_snapshot_xmin(pg_current_snapshot())``: every transaction below ``H`` has ended, so
   the events with ``W <= xid < H`` are exactly those committed since the last run, and none can
   appear there later. (A transaction still open now has an ``xid >= H``: the next run takes it.)
3. The hours those events happened in are dirty. The new human opens and clicks update
   ``FirstEngagement`` (earliest wins, tie on the lowest id); an older first they replace makes
   its own hour dirty too, since that hour loses a unique count.
4. Each dirty hour is rebuilt whole from the events of that hour (DELETE + INSERT … SELECT …
   GROUP BY, one statement pair per run of consecutive hours), then each dirty UTC day from its
   hours; the watermark moves to ``H``. All in the one transaction: a run that fails leaves the
   rollups and the watermark as they were.

Rebuilding a bucket from its events gives the same rows however often it runs, which is what
makes ``rollup_rebuild`` (``manage.py analytics_rollup --rebuild``) and a repeated run harmless.
Every event counts in the bucket of its own ``occurred_at``; a unique open or click in the
bucket of the delivery's first one. The rollups lag behind the oldest transaction still open
that wrote anything in the cluster (it holds ``H`` back).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from analytics.models import (
    LATENCY_BOUNDS_MS,
    ROLLUP_COUNTS,
    ROLLUP_DIMENSIONS,
    ROLLUP_HISTOGRAMS,
)

WATERMARK = "events"
# Serialises runs and rebuilds: pg_advisory_xact_lock's key (released at commit or rollback).
LOCK_SQL = "hashtext('analytics.rollups')"
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
# Hash aggregation of a month of hours keeps one state per group in memory; past work_mem it
# spills to disk, which took most of the time of a full rebuild.
WORK_MEM = "256MB"

DIMENSIONS = ROLLUP_DIMENSIONS
PROVIDER_CALLS = ("sent", "failed", "retry", "ambiguous")
# The event types a rollup reads (the others, queued, scheduled, suppressed …, count nothing).
COUNTED = (
    *PROVIDER_CALLS,
    "delivered",
    "bounced",
    "complained",
    "opened",
    "clicked",
    "unsubscribed",
)
# In the order of _HOURS_SQL's aggregates.
COUNTERS = (*ROLLUP_COUNTS, "cost", "latency_sum_ms")
HISTOGRAMS = ROLLUP_HISTOGRAMS
_SIZE = len(LATENCY_BOUNDS_MS) + 1
_DIMS = ", ".join(DIMENSIONS)
_COLUMNS = f"granularity, bucket, {_DIMS}, {', '.join(COUNTERS)}, {', '.join(HISTOGRAMS)}"


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _histogram_bucket(column: str) -> str:
    """The index of the histogram bucket ``column`` falls in: the first bound it does not exceed
    (a bound is inclusive, as Prometheus' ``le``), the last one above every bound; NULL for
    NULL."""
    whens = " ".join(
        f"WHEN {column} <= {bound} THEN {i}" for i, bound in enumerate(LATENCY_BOUNDS_MS)
    )
    return f"CASE WHEN {column} IS NULL THEN NULL {whens} ELSE {len(LATENCY_BOUNDS_MS)} END"


def _histogram(bucket: str) -> str:
    counts = ", ".join(f"count(*) FILTER (WHERE {bucket} = {i})" for i in range(_SIZE))
    return f"ARRAY[{counts}]"


# One hour's rows from its events. ``lat``, ``qw`` and ``ap`` are each event's histogram bucket
# (NULL when it has no such figure); ``first`` marks the delivery's first human open or click;
# ``duplicate`` a send flagged ``possibly_duplicate``.
_HOURS_SQL = f"""
INSERT INTO analytics_rollup ({_COLUMNS})
SELECT 'hour', e.bucket, {", ".join(f"e.{d}" for d in DIMENSIONS)},
    count(*) FILTER (WHERE e.type = 'sent'),
    count(*) FILTER (WHERE e.type = 'delivered'),
    count(*) FILTER (WHERE e.type = 'failed'),
    count(*) FILTER (WHERE e.type = 'bounced'),
    count(*) FILTER (WHERE e.type = 'complained'),
    count(*) FILTER (WHERE e.type = 'opened' AND NOT e.machine),
    count(*) FILTER (WHERE e.type = 'opened' AND e.first),
    count(*) FILTER (WHERE e.type = 'opened' AND e.machine),
    count(*) FILTER (WHERE e.type = 'clicked' AND NOT e.machine),
    count(*) FILTER (WHERE e.type = 'clicked' AND e.first),
    count(*) FILTER (WHERE e.type = 'unsubscribed'),
    count(e.lat),
    count(e.lat) FILTER (WHERE e.type <> 'sent'),
    count(*) FILTER (WHERE e.duplicate),
    coalesce(sum(e.cost) FILTER (WHERE e.type = 'sent'), 0),
    coalesce(sum(e.latency_ms) FILTER (WHERE e.lat IS NOT NULL), 0),
    {_histogram("e.lat")}, {_histogram("e.qw")}, {_histogram("e.ap")}
FROM (
    SELECT date_trunc('hour', ev.occurred_at, 'UTC') AS bucket,
        {", ".join(f"ev.{d}" for d in DIMENSIONS)}, ev.type, ev.machine, ev.cost, ev.latency_ms,
        CASE WHEN ev.type IN ({_quoted(PROVIDER_CALLS)})
            THEN {_histogram_bucket("ev.latency_ms")} END AS lat,
        CASE WHEN ev.type = 'sent' THEN {_histogram_bucket("ev.queue_wait_ms")} END AS qw,
        CASE WHEN ev.type = 'sent' THEN {_histogram_bucket("ev.api_to_provider_ms")} END AS ap,
        fe.event_id IS NOT NULL AS first,
        -- A send repeated after a worker died in its provider call (the sweep flagged it);
        -- only sent events' data is read.
        CASE WHEN ev.type = 'sent' THEN ev.data @> '{{"possibly_duplicate": true}}' END
            AS duplicate
    FROM analytics_event AS ev
    LEFT JOIN analytics_firstengagement AS fe
        ON ev.type IN ('opened', 'clicked') AND fe.delivery_id = ev.delivery_id
        AND fe.type = ev.type AND fe.event_id = ev.id
    WHERE ev.occurred_at >= %(lo)s AND ev.occurred_at < %(hi)s
        AND ev.type IN ({_quoted(COUNTED)})
) AS e
GROUP BY e.bucket, {", ".join(f"e.{d}" for d in DIMENSIONS)}
"""  # noqa: S608 (constants only)


def _histogram_sum(column: str) -> str:
    return "ARRAY[" + ", ".join(f"sum({column}[{i}])::bigint" for i in range(1, _SIZE + 1)) + "]"


# One UTC day's rows from its hours (unique counts add up: each first counts in one hour only).
_DAYS_SQL = f"""
INSERT INTO analytics_rollup ({_COLUMNS})
SELECT 'day', date_trunc('day', bucket, 'UTC'), {_DIMS},
    {", ".join(f"sum({c})" for c in COUNTERS)},
    {", ".join(_histogram_sum(h) for h in HISTOGRAMS)}
FROM analytics_rollup
WHERE granularity = 'hour' AND bucket >= %(lo)s AND bucket < %(hi)s
GROUP BY date_trunc('day', bucket, 'UTC'), {_DIMS}
"""  # noqa: S608 (constants only)

_DELETE_SQL = """
DELETE FROM analytics_rollup WHERE granularity = %(granularity)s
    AND bucket >= %(lo)s AND bucket < %(hi)s
"""

# The hours of the events committed since the watermark, and how many there are.
_NEW_HOURS_SQL = """
SELECT date_trunc('hour', occurred_at, 'UTC'), count(*) FROM analytics_event
WHERE xid >= %(low)s::text::xid8 AND xid < %(high)s::text::xid8
GROUP BY 1
"""

# Upserts the first human open and click of each delivery from the events ``{where}`` selects
# (earliest wins, tie on the lowest id) and answers the hours of the firsts it replaced. ``old``
# reads the table as it was before the statement (one snapshot for the whole statement); the
# upsert runs whether or not the outer query reads it.
_FIRSTS_SQL = """
WITH candidate AS (
    SELECT DISTINCT ON (delivery_id, type) delivery_id, type, occurred_at, id
    FROM analytics_event
    WHERE {where} AND type IN ('opened', 'clicked') AND NOT machine AND delivery_id IS NOT NULL
    ORDER BY delivery_id, type, occurred_at, id
), old AS (
    SELECT f.occurred_at FROM analytics_firstengagement AS f
    JOIN candidate AS c ON c.delivery_id = f.delivery_id AND c.type = f.type
    WHERE (c.occurred_at, c.id) < (f.occurred_at, f.event_id)
), upsert AS (
    INSERT INTO analytics_firstengagement (delivery_id, type, occurred_at, event_id)
    SELECT delivery_id, type, occurred_at, id FROM candidate
    ON CONFLICT (delivery_id, type) DO UPDATE
        SET occurred_at = EXCLUDED.occurred_at, event_id = EXCLUDED.event_id
        WHERE (EXCLUDED.occurred_at, EXCLUDED.event_id)
            < (analytics_firstengagement.occurred_at, analytics_firstengagement.event_id)
    RETURNING 1
)
SELECT DISTINCT date_trunc('hour', occurred_at, 'UTC') FROM old
"""


@dataclass
class RunResult:
    """What a run did: events read, buckets rebuilt, the watermark it moved to."""

    events: int = 0
    hours: int = 0
    days: int = 0
    watermark: int = 0
    skipped: bool = False
    rebuilt: list[dt.datetime] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "hours": self.hours,
            "days": self.days,
            "watermark": self.watermark,
            "skipped": self.skipped,
        }


def rollup_run(*, wait: bool = False) -> RunResult:
    """Counts the events committed since the last run (the beat's task, every minute).

    With ``wait`` false a run that finds another one running returns at once (``skipped``):
    that one will take what this one would have. Safe to run at any time, any number of times.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        if not _lock(cursor, wait=wait):
            return RunResult(skipped=True)
        cursor.execute(
            "INSERT INTO analytics_rollupwatermark (name, xid, updated_at) "
            "VALUES (%s, 0, now()) ON CONFLICT (name) DO NOTHING",
            [WATERMARK],
        )
        cursor.execute(
            "SELECT xid, pg_snapshot_xmin(pg_current_snapshot())::text::bigint "
            "FROM analytics_rollupwatermark WHERE name = %s",
            [WATERMARK],
        )
        low, high = cursor.fetchone()
        if high <= low:
            return RunResult(watermark=low)
        span = {"low": low, "high": high}
        cursor.execute(_NEW_HOURS_SQL, span)
        new = cursor.fetchall()
        hours = {hour for hour, _ in new}
        hours |= _firsts(cursor, "xid >= %(low)s::text::xid8 AND xid < %(high)s::text::xid8", span)
        result = _rebuild(cursor, hours)
        result.events = sum(count for _, count in new)
        cursor.execute(
            "UPDATE analytics_rollupwatermark SET xid = %s, updated_at = now() WHERE name = %s",
            [high, WATERMARK],
        )
        result.watermark = high
        return result


def events_kept_from(now: dt.datetime | None = None) -> dt.datetime | None:
    """The oldest moment whose events the retention still keeps: the start of the UTC month
    that holds ``now - RETENTION_DAYS["events"]`` (partitions go by whole months); None when
    events are kept forever (0 days)."""
    days = settings.RETENTION_DAYS["events"]
    if days <= 0:
        return None
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    return _day_floor(cutoff).replace(day=1)


def rollup_rebuild(start: dt.datetime, end: dt.datetime) -> RunResult:
    """Rebuilds every hour that meets ``[start, end)`` and the days they belong to, from the
    events (``manage.py analytics_rollup --rebuild``). Firsts found among the range's events are
    kept as a run keeps them. Leaves the watermark where it is; waits for a running run.

    The range starts no earlier than the events the retention keeps: rebuilding a bucket whose
    events are gone would erase its rollups, which outlive them."""
    kept_from = events_kept_from()
    lo = _hour_floor(start) if kept_from is None else max(_hour_floor(start), kept_from)
    hi = _hour_floor(end) + (HOUR if _hour_floor(end) < end else dt.timedelta(0))
    with transaction.atomic(), connection.cursor() as cursor:
        _lock(cursor, wait=True)
        hours = set(_hours_between(lo, hi))
        hours |= _firsts(
            cursor, "occurred_at >= %(lo)s AND occurred_at < %(hi)s", {"lo": lo, "hi": hi}
        )
        return _rebuild(cursor, hours)


def _lock(cursor: Any, *, wait: bool) -> bool:
    if wait:
        cursor.execute(f"SELECT pg_advisory_xact_lock({LOCK_SQL})")
        return True
    cursor.execute(f"SELECT pg_try_advisory_xact_lock({LOCK_SQL})")
    return bool(cursor.fetchone()[0])


def _firsts(cursor: Any, where: str, params: dict[str, Any]) -> set[dt.datetime]:
    cursor.execute(_FIRSTS_SQL.format(where=where), params)
    return {hour for (hour,) in cursor.fetchall()}


def _rebuild(cursor: Any, hours: set[dt.datetime]) -> RunResult:
    """Rebuilds ``hours`` whole from their events, then their days from their hours."""
    result = RunResult(hours=len(hours), rebuilt=sorted(hours))
    if not hours:
        return result
    cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    # The planner overestimates the groups of an hour's events and sorts them on eight keys;
    # hashing them was a quarter faster over a month (bench/analytics.py). Only for these.
    cursor.execute("SET LOCAL enable_sort = off")
    for lo, hi in _runs(sorted(hours), HOUR):
        params = {"granularity": "hour", "lo": lo, "hi": hi}
        cursor.execute(_DELETE_SQL, params)
        cursor.execute(_HOURS_SQL, params)
    cursor.execute("SET LOCAL enable_sort = on")
    days = sorted({_day_floor(hour) for hour in hours})
    result.days = len(days)
    for lo, hi in _runs(days, DAY):
        params = {"granularity": "day", "lo": lo, "hi": hi}
        cursor.execute(_DELETE_SQL, params)
        cursor.execute(_DAYS_SQL, params)
    return result


def _runs(
    starts: Sequence[dt.datetime], step: dt.timedelta
) -> list[tuple[dt.datetime, dt.datetime]]:
    """Sorted bucket starts as ``[lo, hi)`` ranges of consecutive buckets: one statement pair
    per range, each scanning only its own time range (and partitions)."""
    runs: list[tuple[dt.datetime, dt.datetime]] = []
    for start in starts:
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], start + step)
        else:
            runs.append((start, start + step))
    return runs


def _hour_floor(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _day_floor(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _hours_between(lo: dt.datetime, hi: dt.datetime) -> Iterable[dt.datetime]:
    hour = lo
    while hour < hi:
        yield hour
        hour += HOUR


def rollups_prune(*, now: dt.datetime, days: int) -> int:
    """Deletes the rollups of buckets that began more than ``days`` days before ``now``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM analytics_rollup WHERE granularity IN ('hour', 'day') AND bucket < %s",
            [now - dt.timedelta(days=days)],
        )
        return int(cursor.rowcount)
