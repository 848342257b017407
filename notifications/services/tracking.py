"""What providers and recipients tell us after a send: provider events (delivered, bounced,
complained …), the suppression list they feed, and one-click unsubscribes."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from analytics import events
from analytics import tracking as engagement
from communication.audit import audit_record
from communication.models import Category, normalize_e164
from notifications import metrics
from notifications.escalation import EMAIL_CLICKED, EMAIL_OPENED
from notifications.models import (
    Delivery,
    NotificationPreference,
    ProviderEvent,
    Suppression,
    suppression_hash,
)
from notifications.services.cancellation import escalations_stop
from notifications.services.delivery_events import delivery_event
from notifications.tracking import TrackingEvent
from notifications.unsubscribe import TokenPayload

logger = logging.getLogger(__name__)


def suppression_add(*, channel: str, address: str, reason: str, detail: str = "") -> Suppression:
    """Adds ``address`` to the suppression list (idempotent; the first reason stays). One added
    by hand (reason ``manual``) is recorded in the audit trail, by id and channel only."""
    address = address.strip().lower() if channel == "email" else address.strip()
    lookup = {"channel": channel, "address_hash": suppression_hash(address)}
    defaults = {"address": address, "reason": reason, "detail": detail[:2000]}
    if reason != Suppression.Reason.MANUAL:
        # Bounces and complaints, recorded as provider events already: no entry each.
        return Suppression.objects.get_or_create(**lookup, defaults=defaults)[0]
    with transaction.atomic():
        suppression, created = Suppression.objects.get_or_create(**lookup, defaults=defaults)
        if created:
            audit_record(
                "suppression.add",
                "notifications.suppression",
                suppression.pk,
                changes={"channel": channel, "reason": reason, "address": "changed"},
            )
    return suppression


@transaction.atomic
def suppressions_remove(*, ids: Iterable[int], actor: str) -> int:
    """Takes entries off the suppression list, at staff's request (the address works again):
    later sends to it go out. Returns how many were removed."""
    found = list(Suppression.objects.filter(id__in=list(ids)).values_list("id", "channel"))
    removed, _ = Suppression.objects.filter(id__in=[pk for pk, _ in found]).delete()
    for pk, channel in found:
        audit_record(
            "suppression.remove", "notifications.suppression", pk, changes={"channel": channel}
        )
    logger.info("suppressions removed", extra={"actor": actor, "count": removed})
    return removed


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
                ProviderEvent.objects.create(
                    provider=event.provider, event_key=event.event_id[:255]
                )
        except IntegrityError:
            return None
    delivery = (
        Delivery.objects.select_for_update(of=("self", "notification"))
        .select_related("notification__request")
        .filter(provider=event.provider, provider_message_id=event.provider_message_id)
        .first()
    )
    if delivery is None:
        logger.info(
            "provider event for an unknown message",
            extra={"provider": event.provider, "event": event.event},
        )
        return None

    when = provider_time(event.occurred_at)
    target = _TRACKED_STATUS.get(event.event)
    if event.event in ("bounced", "failed") and event.permanent:
        target = Delivery.Status.FAILED
    changed = []
    if target and Delivery.RANK[target] > Delivery.RANK[delivery.status]:
        delivery.status = target
        changed.append("status")
        stamp = {"sent": "sent_at", "delivered": "delivered_at", "failed": "failed_at"}[target]
        setattr(delivery, stamp, when)
        changed.append(stamp)
        if target == Delivery.Status.FAILED:
            delivery.error = (event.reason or event.event)[:2000]
            changed.append("error")
    if changed:
        delivery.save(update_fields=[*changed, "updated_at"])
        metrics.deliveries_count([(delivery.channel, event.provider, delivery.status)])

    suppress = event.suppress
    if not suppress and event.event == "complained":
        suppress = Suppression.Reason.COMPLAINT
    if not suppress and event.event == "bounced" and event.permanent and event.bounce != "soft":
        suppress = Suppression.Reason.HARD_BOUNCE
    if not suppress and event.event == "unsubscribed":
        suppress = Suppression.Reason.UNSUBSCRIBE
    if suppress and delivery.address:
        suppression_add(
            channel=delivery.channel, address=delivery.address, reason=suppress, detail=event.reason
        )

    # The recipient's address (``ip``) serves the machine check only: it is not kept.
    data = {k: v for k, v in event.data.items() if k not in ("ip", "machine")}
    data.update(
        reason=event.reason[:500], applied=bool(changed), occurred_at=event.occurred_at.isoformat()
    )
    if event.bounce:
        data["bounce"] = event.bounce
    machine = False
    if event.event in ("opened", "clicked"):
        machine_reason = _machine_reason(event)
        if machine_reason:
            machine, data["reason"] = True, machine_reason
        elif delivery.channel == "email":
            # A person read it: the notification's later escalation steps are not sent.
            escalations_stop(
                [delivery.notification_id],
                reason=EMAIL_OPENED if event.event == "opened" else EMAIL_CLICKED,
            )
    events.record(
        **delivery_event(
            delivery,
            event.event,
            provider=event.provider,
            occurred_at=when,
            machine=machine,
            data=data,
        )
    )
    return delivery


def _machine_reason(event: TrackingEvent) -> str:
    """Why a provider's open or click looks made by a machine: the provider's own verdict
    (SendGrid's Apple flag), else the pixel's detection on what the provider saw."""
    if event.data.get("machine"):
        return "provider"
    reason = engagement.machine_reason(
        user_agent=str(event.data.get("user_agent") or ""), ip=str(event.data.get("ip") or "")
    )
    # A provider that passes no user agent says nothing against a person.
    return "" if reason == "no_user_agent" else reason


# A provider's time of an event is trusted within this window: a clock far off (or a replayed
# payload) must not put events in months no rollup will look at again.
PROVIDER_TIME_WINDOW = dt.timedelta(days=30)


def provider_time(when: dt.datetime) -> dt.datetime:
    """``when`` (the provider's time of an event) clamped to [now - 30 days, now]."""
    now = timezone.now()
    if timezone.is_naive(when):
        when = timezone.make_aware(when, dt.UTC)
    return min(max(when, now - PROVIDER_TIME_WINDOW), now)


def address_normalize(channel: str, value: str) -> str:
    """The form the suppression list and deliveries store: E.164 for SMS, a trimmed lower-case
    address for email; raises Django's ValidationError for a value that is not one. Other
    channels' values are trimmed and lower-cased."""
    if channel == "sms":
        return normalize_e164(value, settings.SMS_DEFAULT_REGION or None)
    address = value.strip().lower()
    if channel == "email":
        validate_email(address)
    return address


@transaction.atomic
def unsubscribe_apply(payload: TokenPayload, *, source: str) -> str:
    """Applies a verified unsubscribe token: turns the category off for a user on that channel,
    or suppresses a raw address. Returns a short description for the confirmation page."""
    category = Category.objects.filter(key=payload["c"]).first()
    channel = payload["ch"]
    if payload.get("u") and category is not None and not category.mandatory:
        NotificationPreference.objects.update_or_create(
            user_id=payload["u"],
            category=category,
            channel=channel,
            defaults={"enabled": False},
        )
        audit_record(
            "preference.unsubscribe",
            "communication.user",
            payload["u"],
            changes={f"{category.key}.{channel}": ["enabled", "disabled"], "source": source},
        )
        what = f"{category.name} messages by {channel}"
    else:
        suppression_add(
            channel=channel,
            address=payload["a"],
            reason=Suppression.Reason.UNSUBSCRIBE,
            detail=source,
        )
        what = f"all messages by {channel} to this address"
    delivery = (
        Delivery.objects.select_related("notification__request").filter(id=payload["d"]).first()
        if payload.get("d")
        else None
    )
    if delivery is not None:
        events.record(**delivery_event(delivery, "unsubscribed", source=source))
    else:
        events.record(
            "unsubscribed",
            channel=channel,
            category=payload["c"],
            user_id=payload.get("u"),
            data={"source": source},
        )
    return what
