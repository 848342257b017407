"""The beat's housekeeping: deliveries whose worker died or whose message was lost, scheduled
deliveries whose time has come, and idempotency keys and provider event ids past their use."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from analytics import events
from notifications.enqueue import enqueue_many
from notifications.models import Delivery, IdempotencyKey, Notification, ProviderEvent
from notifications.services.delivery_events import delivery_event
from notifications.services.inbox import notifications_publish_created
from notifications.services.outcomes import delivery_fail


def deliveries_sweep(*, batch: int = 500) -> dict[str, int]:
    """The beat's safety net, run every few seconds (safe to run in several beats at once).

    - a delivery whose lease expired (its worker died) goes back to the queue; if the worker
      died during its provider call (``provider_call_at``) it is flagged ``possibly_duplicate``,
      and past ``DELIVERY_MAX_CRASHES`` such deaths it is dead-lettered (``worker_crashed``);
    - a queued delivery nobody picked up for ``DELIVERY_REPUBLISH_SECONDS`` (committed but never
      published, or a message the broker lost) is published again; healthy backlog younger than
      that is left to wait its turn (re-publishing it would add load when the system is behind);
    - a scheduled delivery whose time has come is released (in-app ones are delivered at once).
    """
    now = timezone.now()
    counts = {"expired": 0, "requeued": 0, "released": 0, "dead_lettered": 0}
    with transaction.atomic():
        expired = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("notification__request")
            .filter(status="sending", lease_until__lt=now)[:batch]
        )
        poison = [
            d
            for d in expired
            if d.provider_call_at is not None and d.crashes + 1 >= settings.DELIVERY_MAX_CRASHES
        ]
        again = [d for d in expired if d not in poison]
        if again:
            crashed = [d for d in again if d.provider_call_at is not None]
            Delivery.objects.filter(id__in=[d.id for d in again]).update(
                status="queued",
                lease_until=None,
                next_attempt_at=None,
                updated_at=now,
                possibly_duplicate=Case(
                    When(provider_call_at__isnull=False, then=Value(True)),
                    default=F("possibly_duplicate"),
                ),
                crashes=Case(
                    When(provider_call_at__isnull=False, then=F("crashes") + Value(1)),
                    default=F("crashes"),
                    output_field=Delivery._meta.get_field("crashes"),
                ),
            )
            events.record_many(
                [
                    delivery_event(d, "queued", reason="lease_expired", possibly_duplicate=True)
                    for d in crashed
                ]
            )
            ids = [(str(d.id), d.priority) for d in again]
            transaction.on_commit(lambda: enqueue_many(ids))
            counts["expired"] = len(again)
        for delivery in poison:
            counts["dead_lettered"] += delivery_fail(
                delivery,
                "worker_crashed",
                error=(
                    f"the worker died during this delivery's send {delivery.crashes + 1} times;"
                    " it is not tried again"
                ),
            )
    stale = now - dt.timedelta(seconds=settings.DELIVERY_REPUBLISH_SECONDS)
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
