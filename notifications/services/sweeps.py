"""The beat's housekeeping: deliveries whose worker died or whose message was lost, scheduled
deliveries whose time has come, and idempotency keys and provider event ids past their use."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from analytics import events
from notifications.enqueue import enqueue_many
from notifications.models import Delivery, IdempotencyKey, Notification, ProviderEvent
from notifications.services.delivery_events import delivery_event
from notifications.services.inbox import notifications_publish_created


def deliveries_sweep(*, batch: int = 500) -> dict[str, int]:
    """The beat's safety net, run every few seconds (safe to run in several beats at once).

    - a delivery whose lease expired (its worker died) goes back to the queue;
    - a queued delivery nobody picked up (committed but never enqueued, or a lost message) is
      enqueued again;
    - a scheduled delivery whose time has come is released (in-app ones are delivered at once).
    """
    now = timezone.now()
    counts = {"expired": 0, "requeued": 0, "released": 0}
    with transaction.atomic():
        expired = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status="sending", lease_until__lt=now)
            .values_list("id", "priority")[:batch]
        )
        if expired:
            Delivery.objects.filter(id__in=[d for d, _ in expired]).update(
                status="queued", lease_until=None, next_attempt_at=None, updated_at=now
            )
            ids = [(str(d), p) for d, p in expired]
            transaction.on_commit(lambda: enqueue_many(ids))
            counts["expired"] = len(expired)
    stale = now - dt.timedelta(seconds=30)
    with transaction.atomic():
        lost = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status="queued", updated_at__lt=stale)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=stale))
            # A held request's deliveries wait for its release, which enqueues them.
            .filter(notification__request__held_at__isnull=True)
            .values_list("id", "priority")[:batch]
        )
        if lost:
            Delivery.objects.filter(id__in=[d for d, _ in lost]).update(updated_at=now)
            ids2 = [(str(d), p) for d, p in lost]
            transaction.on_commit(lambda: enqueue_many(ids2))
            counts["requeued"] = len(lost)
    with transaction.atomic():
        due = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self", "notification"))
            .select_related("notification__request")
            .filter(status="scheduled", scheduled_for__lte=now)[:batch]
        )
        to_enqueue = []
        released = []
        for delivery in due:
            if delivery.channel == "in_app":
                delivery.status, delivery.delivered_at = "delivered", now
                released.append(delivery.notification)
            else:
                delivery.status = "queued"
                to_enqueue.append((str(delivery.id), delivery.priority))
            delivery.queued_at = now
            delivery.updated_at = now
        if due:
            Delivery.objects.bulk_update(due, ["status", "delivered_at", "queued_at", "updated_at"])
            if released:
                # Into the inbox in the transaction that delivers it: a request cancelled
                # meanwhile holds the delivery's lock, so its in-app item never gets here.
                Notification.objects.filter(id__in=[n.id for n in released]).update(inbox_at=now)
                for notification in released:
                    notification.inbox_at = now
            notifications_publish_created(released)
            events.record_many([delivery_event(d, d.status) for d in due])
            transaction.on_commit(lambda: enqueue_many(to_enqueue))
            counts["released"] = len(due)
    return counts


def idempotency_prune() -> int:
    """Forgets idempotency keys after 24 h, and provider event ids (webhook de-duplication,
    Mailgun tokens) after 7 days: providers stop retrying long before."""
    cutoff = timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
    removed = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()[0]
    seen_cutoff = timezone.now() - dt.timedelta(days=7)
    removed += ProviderEvent.objects.filter(received_at__lt=seen_cutoff).delete()[0]
    return removed
