"""Frequency caps: at most ``limit`` messages of a category on a channel to one person within
any ``period`` (``Category.frequency_caps``), kept by the delivery worker just before it hands a
batch to providers.

What counts is a place in the ledger (``CapSlot``), one per delivery: taken when the worker is
about to send it, kept by its retries, requeues and failovers (the unique delivery column), and
given back when the delivery fails for good (the person received nothing). A delivery that finds
no place left is ``skipped`` with reason ``frequency_cap``. The window slides: a place counts
while it is younger than ``period``.

Several workers at once: the places of one (person, category, channel) are counted and taken
under a transaction-scoped advisory lock on that triple, taken in one sorted statement per batch
(no lock cycles between workers), so that a count and the insert that follows are never
interleaved with another worker's. The count runs in a statement after the lock, so it sees
every place committed before the lock was granted. Web processes never send: the worker is the
one place a cap is decided.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from analytics import events
from communication import rows
from communication.models import cap_period_seconds
from notifications import metrics
from notifications.categories import category_get
from notifications.models import DIGEST_CALLER, CapSlot, Delivery
from notifications.services.delivery_events import delivery_event

logger = logging.getLogger(__name__)

REASON = "frequency_cap"
# The advisory locks' first key: keeps ours apart from the other users of advisory locks.
_LOCK_SPACE = 0x63617073  # "caps"


def delivery_cap(delivery: Delivery) -> tuple[int, int] | None:
    """``(limit, period in seconds)`` of the cap ``delivery`` falls under, or None. Reads only
    the category the claim loaded with the delivery: no query."""
    category = delivery.notification.category
    if category is None or not category.frequency_caps or category.mandatory:
        return None
    # A digest carries items already decided (and marked sent in it): capping it would lose them.
    if delivery.notification.request.caller == DIGEST_CALLER:
        return None
    cap = category.frequency_caps.get(delivery.channel)
    if not cap:
        return None
    try:
        return int(cap["limit"]), _seconds(cap["period"])
    except (KeyError, TypeError, ValueError, ValidationError):
        # Written past the model's validation (a shell, a raw UPDATE): sending goes on, uncapped,
        # rather than failing every batch of the category.
        logger.error("category %s has an invalid %s cap: %r", category.key, delivery.channel, cap)
        return None


@functools.lru_cache(maxsize=64)
def _seconds(period: str) -> int:
    return cap_period_seconds(period)


def cap_subject(delivery: Delivery) -> str:
    """The person a cap is kept for: the user, or an address-only recipient's keyed hash."""
    notification = delivery.notification
    if notification.user_id is not None:
        return f"u:{notification.user_id}"
    if delivery.address_hash:
        return f"a:{delivery.address_hash}"
    return ""


def deliveries_within_caps(
    deliveries: Sequence[Delivery],
) -> tuple[list[Delivery], dict[str, str]]:
    """Splits a claimed batch into the deliveries that may be sent and those skipped for their
    cap (``{delivery id: "skipped"}``), in the order given. Deliveries under no cap cost
    nothing; a batch with capped ones costs two statements (the locks, then one statement that
    counts, takes the places and marks the skips), and a third for the skips' events when there
    are any, in one short transaction committed before any provider call.
    """
    capped = []
    for delivery in deliveries:
        cap = delivery_cap(delivery)
        subject = cap_subject(delivery) if cap else ""
        if cap and subject:
            capped.append((delivery, subject, cap))
    if not capped:
        return list(deliveries), {}
    now = timezone.now()
    keys = [f"{subject}|{d.notification.category_id}|{d.channel}" for d, subject, _ in capped]
    columns: list[list[Any]] = [
        rows.column(Delivery, "id", [d.id for d, _, _ in capped]),
        [d.attempts for d, _, _ in capped],
        [subject for _, subject, _ in capped],
        [d.notification.category_id for d, _, _ in capped],
        [d.channel for d, _, _ in capped],
        [limit for _, _, (limit, _) in capped],
        [now - dt.timedelta(seconds=seconds) for _, _, (_, seconds) in capped],
    ]
    candidates = [d for d, _, _ in capped]
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(_LOCK, [_LOCK_SPACE, keys])
        cursor.execute(_DECIDE, [*columns, now, REASON, now])
        skipped_ids = {row[0] for row in cursor.fetchall()}
        skipped = [d for d in candidates if d.id in skipped_ids]
        if skipped:
            # Built only when needed: most batches under a cap skip nothing.
            events.record_many(
                [delivery_event(d, "skipped", data={"reason": REASON}) for d in skipped]
            )
    if not skipped:
        return list(deliveries), {}
    for d in skipped:
        d.status, d.reason = "skipped", REASON
    metrics.deliveries_count((d.channel, "", "skipped") for d in skipped)
    return (
        [d for d in deliveries if d.id not in skipped_ids],
        {str(d.id): "skipped" for d in skipped},
    )


def cap_slot_release(delivery: Delivery) -> None:
    """Gives back the place of a delivery that failed for good (nothing reached the person).
    A query only when the delivery falls under a cap."""
    if delivery_cap(delivery) is not None:
        CapSlot.objects.filter(delivery_id=delivery.id).delete()


def cap_slots_release_cancelled(cancelled: Sequence[Delivery]) -> None:
    """Gives back the places of queued deliveries just cancelled (a place is taken at the
    worker's claim; one put back in the queue by a rate limit or an open breaker keeps it).
    A query only when one of them falls under a cap (categories are cached per process)."""
    capped = []
    for delivery in cancelled:
        category = category_get(delivery.notification.category_id)
        caps = category.frequency_caps if category and not category.mandatory else None
        if caps and delivery.channel in caps:
            capped.append(delivery.id)
    if capped:
        CapSlot.objects.filter(delivery_id__in=capped).delete()


# One transaction-scoped lock per (person, category, channel), taken in key order by every
# worker so that two batches sharing people never wait on each other in a cycle. The DISTINCT
# sorted subquery feeds the locks in that order.
_LOCK = """
    SELECT count(pg_advisory_xact_lock(%s, k))
    FROM (SELECT DISTINCT hashtext(key) AS k FROM unnest(%s::text[]) AS key ORDER BY 1) AS keys
"""

_TABLE = CapSlot._meta.db_table
_DELIVERIES = Delivery._meta.db_table

# Under the locks: a delivery that already holds a place keeps it (a retry counts once); the
# others of each triple take, in id order, the places its window has left; the rest are
# skipped, if this worker still holds them. Places past every window are pruned as it goes.
_DECIDE = f"""
    WITH wanted AS (
        SELECT * FROM unnest(
            %s::uuid[], %s::int[], %s::text[], %s::text[], %s::text[], %s::int[],
            %s::timestamptz[]
        ) AS w(delivery_id, attempts, subject, category, channel, cap, since)
    ), triples AS (
        SELECT DISTINCT subject, category, channel, since FROM wanted
    ), mine AS (
        -- Each triple's places, through the window index (LATERAL: one index range per triple,
        -- never a scan of the ledger).
        SELECT t.subject, t.category, t.channel, t.since, s.id, s.delivery_id, s.granted_at
        FROM triples AS t CROSS JOIN LATERAL (
            SELECT s.id, s.delivery_id, s.granted_at FROM {_TABLE} AS s
            WHERE s.subject = t.subject AND s.category = t.category AND s.channel = t.channel
        ) AS s
    ), pruned AS (
        DELETE FROM {_TABLE} WHERE id IN (
            SELECT id FROM mine WHERE granted_at <= since
              AND delivery_id NOT IN (SELECT delivery_id FROM wanted)
        )
    ), held AS (
        SELECT w.delivery_id FROM wanted AS w
        WHERE EXISTS (SELECT 1 FROM {_TABLE} AS s WHERE s.delivery_id = w.delivery_id)
    ), used AS (
        SELECT subject, category, channel, count(*) AS n FROM mine WHERE granted_at > since
        GROUP BY 1, 2, 3
    ), fresh AS (
        SELECT w.*, row_number() OVER (
            PARTITION BY w.subject, w.category, w.channel ORDER BY w.delivery_id
        ) AS place
        FROM wanted AS w WHERE w.delivery_id NOT IN (SELECT delivery_id FROM held)
    ), granted AS (
        INSERT INTO {_TABLE} (subject, category, channel, delivery_id, granted_at)
        SELECT f.subject, f.category, f.channel, f.delivery_id, %s
        FROM fresh AS f LEFT JOIN used AS u
          ON u.subject = f.subject AND u.category = f.category AND u.channel = f.channel
        WHERE f.place <= f.cap - coalesce(u.n, 0)
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING delivery_id
    ), skipped AS (
        UPDATE {_DELIVERIES} AS d
        SET status = 'skipped', reason = %s, updated_at = %s, lease_until = NULL
        FROM fresh AS f
        WHERE d.id = f.delivery_id AND d.status = 'sending' AND d.attempts = f.attempts
          AND f.delivery_id NOT IN (SELECT delivery_id FROM granted)
        RETURNING d.id
    )
    SELECT id FROM skipped
"""  # noqa: S608  (names from the models)
