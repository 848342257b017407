"""Digests: the deliveries held for a user's digest (or for the end of their quiet hours),
released as one message per user and channel when their time comes.

The release writes the digest through the one writer of notifications and deliveries
(:func:`notifications.services.send.recipients_write`), rendered from the ``digest`` template
family, and marks the held deliveries ``sent`` (reason ``digest``) with a link to the
:class:`~notifications.models.Digest`, all in one transaction: a digest is either sent with its
items marked, or not at all and its items still held.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
import zoneinfo
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from analytics import events
from communication.exceptions import APIError
from communication.models import User
from notifications import resolution
from notifications.models import (
    DIGEST_CALLER,
    Delivery,
    Digest,
    NotificationPreference,
    NotificationRequest,
)
from notifications.selectors import DigestItem as Item
from notifications.selectors import digest_items as held_items
from notifications.services.cancellation import deliveries_cancel_pending
from notifications.services.delivery_events import delivery_event
from notifications.services.send import recipients_write

logger = logging.getLogger(__name__)

DIGEST_FAMILY = "digest"
# Namespace of the advisory lock that makes one process the releaser of a (user, channel).
_LOCK_NAMESPACE = 21_0001
# The (user, channel) pairs with a due held delivery; the partial index on held deliveries'
# scheduled_for (delivery_held_due) serves it.
DUE_GROUPS = (
    "SELECT DISTINCT n.user_id, d.channel FROM notifications_delivery d "
    "JOIN notifications_notification n ON n.id = d.notification_id "
    "WHERE d.status = 'held' AND d.scheduled_for <= %s AND n.user_id IS NOT NULL "
    "LIMIT %s"
)


def digest_context(items: list[Item], *, user: User, cap: int) -> dict[str, Any]:
    """The ``digest`` template's data: the first ``cap`` items (newest first) grouped by
    category (the group of the newest item first), the flat list, and how many were left out."""
    shown = items[:cap]
    groups: dict[str, dict[str, Any]] = {}
    entries = []
    for item in shown:
        entry = {
            "title": item.title,
            "summary": item.summary,
            "url": item.url,
            "category": item.category,
            "at": item.created_at.isoformat(),
        }
        entries.append(entry)
        groups.setdefault(
            item.category, {"category": item.category, "name": item.category_name, "entries": []}
        )["entries"].append(entry)
    tz = _zone(user.timezone)
    oldest = min(i.created_at for i in items).astimezone(tz)
    newest = max(i.created_at for i in items).astimezone(tz)
    data: dict[str, Any] = {
        "period_start": oldest.date().isoformat(),
        "period_end": newest.date().isoformat(),
        "entries": entries,
        "groups": list(groups.values()),
        "unread_count": len(items),
        "more": len(items) - len(shown),
    }
    if user.name:
        data["name"] = user.name
    return data


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name) if name else dt.UTC
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def digests_release_due(*, now: dt.datetime, groups: int = 200) -> int:
    """Releases the due digests (the beat, every minute; ``now`` is the release's clock, the
    beat's real one or a test's). Returns how many digests were sent. Safe to run in several
    processes at once: each (user, channel) is released by one of them."""
    with connection.cursor() as cursor:
        cursor.execute(DUE_GROUPS, [now, groups])
        due = cursor.fetchall()
    return sum(1 for user_id, channel in due if digest_release(user_id, channel, now=now))


def digest_release(user_id: uuid.UUID, channel: str, *, now: dt.datetime) -> Digest | None:
    """Sends the user's due held deliveries on ``channel`` as one digest; None when nothing was
    due or another process is releasing them.

    Exactly once with several beats or workers: a transaction-scoped advisory lock per
    (user, channel) makes one process the releaser (the other skips it), and the held rows are
    claimed ``FOR UPDATE SKIP LOCKED`` so a cancellation holding one is not waited for (that
    item stays out, cancelled). The digest's notification and delivery, the Digest row and the
    items marked sent commit together; the digest's delivery is enqueued after the commit.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
                [_LOCK_NAMESPACE, f"{user_id}:{channel}"],
            )
            if not cursor.fetchone()[0]:
                return None
        held = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("notification__request", "notification__category")
            .filter(
                status="held",
                scheduled_for__lte=now,
                channel=channel,
                notification__user_id=user_id,
            )
            .order_by("-created_at", "-id")[: settings.DIGEST_MAX_GATHERED]
        )
        held = _drop_opted_out(user_id, channel, held, now)
        if not held:
            return None
        user = User.objects.get(pk=user_id)
        for d in held:
            d.notification.user = user
        items = held_items(held[: settings.DIGEST_MAX_ITEMS])
        # The items past the cap are counted, not rendered.
        context = digest_context(
            items + [_counted(d) for d in held[settings.DIGEST_MAX_ITEMS :]],
            user=user,
            cap=settings.DIGEST_MAX_ITEMS,
        )
        newest = held[0].notification
        request = NotificationRequest(
            caller=DIGEST_CALLER,
            category=newest.category,
            template_key=DIGEST_FAMILY,
            data=context,
            priority="normal",
            channels=[channel],
        )
        recipient = resolution.Recipient(spec={"user_id": user.external_id}, user=user)
        try:
            written = recipients_write(request, [recipient], release=True)
        except APIError as exc:
            # The digest family lost this channel (an operator deleted it): the items stay held
            # and the console shows them; retried at the next release.
            logger.error("digest not sent", extra={"user": str(user_id), "error": exc.code})
            return None
        (own,) = written.deliveries
        quiet = all(d.reason == "quiet hours" for d in held)
        digest = Digest.objects.create(
            user=user,
            channel=channel,
            window_start=min(d.created_at for d in held),
            window_end=max(d.created_at for d in held),
            released_at=now,
            item_count=len(held),
            reason="quiet hours" if quiet else "digest",
            delivery=own,
        )
        # A digest that cannot go (its address suppressed since, say) takes its items with it:
        # they say what happened to them, not "sent".
        status = own.status if own.status in ("skipped", "suppressed") else "sent"
        reason = own.reason[:255] if status != "sent" else "digest"
        stamp = {"sent_at": now} if status == "sent" else {}
        Delivery.objects.filter(id__in=[d.id for d in held]).update(
            status=status, reason=reason, digest=digest, updated_at=now, **stamp
        )
        for d in held:
            d.status = status
        # Not "sent": that event counts a provider call, and the one call is the digest's own.
        kind = "digested" if status == "sent" else status
        events.record_many(
            [
                delivery_event(d, kind, data={"reason": reason, "digest": str(digest.id)})
                for d in held
            ]
        )
    return digest


def _drop_opted_out(
    user_id: uuid.UUID, channel: str, held: list[Delivery], now: dt.datetime
) -> list[Delivery]:
    """Items of a category the user turned off on this channel since they were held (an
    unsubscribe link, a preference change) are cancelled, not sent."""
    # django-stubs type a to_field key's ``category_id`` as the target's integer pk; it is
    # Category.key, a str.
    off: set[str] = set(
        NotificationPreference.objects.filter(
            user_id=user_id,
            channel=channel,
            enabled=False,
            category_id__in={d.notification.category_id for d in held},
        ).values_list("category_id", flat=True)  # type: ignore[arg-type]
    )
    if not off:
        return held
    held_opted_out_cancel([d.id for d in held if d.notification.category_id in off])
    return [d for d in held if d.notification.category_id not in off]


def held_opted_out_cancel(delivery_ids: list[uuid.UUID]) -> int:
    """Cancels held deliveries of a category their user turned off, through the one cancel
    (its events), with the reason ``opted out``."""
    if not delivery_ids:
        return 0
    return len(
        deliveries_cancel_pending(Delivery.objects.filter(id__in=delivery_ids), reason="opted out")
    )


def _counted(delivery: Delivery) -> Item:
    """An item past the cap: counted and dated, never shown."""
    notification = delivery.notification
    return Item(
        delivery_id=delivery.id,
        notification_id=notification.id,
        category=notification.category_id,
        category_name="",
        title="",
        summary="",
        url="",
        created_at=delivery.created_at,
        scheduled_for=delivery.scheduled_for,
        reason=delivery.reason,
    )
