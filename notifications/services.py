"""The verbs of notifications: send, schedule, cancel, deliver, track, read.

Only this module writes notification rows. See "The delivery pipeline" in DESIGN.md.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from analytics import events
from notifications.models import Delivery, ProviderEvent, Suppression
from notifications.tracking import TrackingEvent

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ tracking


def suppression_add(*, channel: str, address: str, reason: str, detail: str = "") -> Suppression:
    """Adds ``address`` to the suppression list (idempotent; the first reason stays)."""
    address = address.strip().lower() if channel == "email" else address.strip()
    suppression, _ = Suppression.objects.get_or_create(
        channel=channel, address=address, defaults={"reason": reason, "detail": detail[:2000]}
    )
    return suppression


_TRACKED_STATUS = {
    "sent": Delivery.Status.SENT,
    "delivered": Delivery.Status.DELIVERED,
}


@transaction.atomic
def delivery_track(event: TrackingEvent) -> Delivery | None:
    """Applies a provider's event to its delivery. Returns the delivery, or None when unknown.

    Idempotent: an event seen before (same provider and ``event_id``) changes nothing. Events never
    move a delivery backwards (a late "sent" after "delivered" is recorded, not applied). Hard
    bounces, complaints and opt-outs feed the suppression list.
    """
    if event.event_id:
        try:
            with transaction.atomic():
                ProviderEvent.objects.create(provider=event.provider,
                                             event_key=event.event_id[:255])
        except IntegrityError:
            return None
    delivery = (
        Delivery.objects.select_for_update()
        .select_related("notification")
        .filter(provider=event.provider, provider_message_id=event.provider_message_id)
        .first()
    )
    if delivery is None:
        logger.info("provider event for an unknown message",
                    extra={"provider": event.provider, "event": event.event})
        return None

    target = _TRACKED_STATUS.get(event.event)
    if event.event in ("bounced", "failed") and event.permanent:
        target = Delivery.Status.FAILED
    changed = []
    if target and Delivery.RANK[target] > Delivery.RANK[delivery.status]:
        delivery.status = target
        changed.append("status")
        stamp = {"sent": "sent_at", "delivered": "delivered_at", "failed": "failed_at"}[target]
        setattr(delivery, stamp, event.occurred_at)
        changed.append(stamp)
        if target == Delivery.Status.FAILED:
            delivery.error = (event.reason or event.event)[:2000]
            changed.append("error")
    if changed:
        delivery.save(update_fields=[*changed, "updated_at"])

    suppress = event.suppress
    if not suppress and event.event == "complained":
        suppress = Suppression.Reason.COMPLAINT
    if not suppress and event.event == "bounced" and event.permanent:
        suppress = Suppression.Reason.HARD_BOUNCE
    if not suppress and event.event == "unsubscribed":
        suppress = Suppression.Reason.UNSUBSCRIBE
    if suppress and delivery.address:
        suppression_add(channel=delivery.channel, address=delivery.address, reason=suppress,
                        detail=event.reason)

    events.record(
        event.event, channel=delivery.channel, provider=event.provider,
        category=delivery.notification.category_id,
        notification_id=delivery.notification_id, delivery_id=delivery.id,
        data={"reason": event.reason[:500], "applied": bool(changed),
              "occurred_at": event.occurred_at.isoformat(), **event.data},
    )
    return delivery


def now():
    return timezone.now()
