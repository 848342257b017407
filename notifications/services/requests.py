"""A caller's requests after they were accepted: look one up, report its status, cancel or
reschedule what has not gone out yet; staff's cancel of single deliveries is the same cancel."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from communication.audit import audit_record
from communication.exceptions import APIError, ConflictError, NotFoundError
from notifications.enqueue import enqueue_many
from notifications.models import Delivery, NotificationRequest
from notifications.services.cancellation import (
    CANCELLABLE,
    CANCELLED_BY_CALLER,
    deliveries_cancel_pending,
)
from notifications.services.send import RequestBody, request_body


def request_get(*, caller: str, request_id: uuid.UUID | str) -> NotificationRequest:
    """The caller's request ``request_id``; another caller's (or an unknown id) is a 404."""
    request = NotificationRequest.objects.filter(id=request_id, caller=caller).first()
    if request is None:
        raise NotFoundError("No such request.")
    return request


def request_status(request: NotificationRequest) -> RequestBody:
    """The request as a send answered it, with each delivery's status now."""
    notifications = list(request.notifications.order_by("created_at", "id"))
    deliveries = Delivery.objects.filter(notification__request=request).order_by("created_at")
    return request_body(request, notifications, list(deliveries))


__all__ = ["CANCELLABLE"]  # re-exported: the console asks which deliveries it may cancel


@transaction.atomic
def request_cancel(*, caller: str, request_id: uuid.UUID | str) -> NotificationRequest:
    """Cancels every delivery not yet handed to a provider."""
    request = request_get(caller=caller, request_id=request_id)
    cancelled = _cancel(Delivery.objects.filter(notification__request=request))
    if request.cancelled_at is None:
        request.cancelled_at = timezone.now()
        request.save(update_fields=["cancelled_at"])
        audit_record(
            "notification_request.cancel",
            "notifications.notificationrequest",
            request.pk,
            changes={"deliveries_cancelled": cancelled},
        )
    return request


@transaction.atomic
def deliveries_cancel(*, delivery_ids: Iterable[uuid.UUID | str], actor: str) -> int:
    """Cancels, at staff's request, the deliveries among ``delivery_ids`` not yet handed to a
    provider, as a caller's cancel does; each gets a ``cancelled`` event naming ``actor``. Others
    (sending, sent, failed …) are left alone: a worker that claimed one first wins. Returns how
    many were cancelled."""
    return _cancel(Delivery.objects.filter(id__in=list(delivery_ids)), actor=actor, audit=True)


@transaction.atomic
def notification_cancel(*, notification_id: uuid.UUID | str, actor: str) -> int:
    """Cancels what of one notification (one recipient of a request) has not gone out yet, as
    :func:`deliveries_cancel` does; the request's other recipients are left alone."""
    return _cancel(
        Delivery.objects.filter(notification_id=notification_id), actor=actor, audit=True
    )


def requests_hold(requests: QuerySet[NotificationRequest]) -> int:
    """Holds ``requests`` (a paused campaign's): workers claim none of their deliveries, which
    stay queued or scheduled; those already claimed finish. Returns how many were held."""
    return requests.filter(held_at__isnull=True).update(held_at=timezone.now())


def requests_release(requests: QuerySet[NotificationRequest]) -> int:
    """Releases held ``requests`` and enqueues their queued deliveries once the caller commits
    (the sweep leaves a held request's deliveries alone). Returns how many were released."""
    held = list(requests.filter(held_at__isnull=False).values_list("id", flat=True))
    if not held:
        return 0
    NotificationRequest.objects.filter(id__in=held).update(held_at=None)
    waiting = [
        (str(delivery_id), priority)
        for delivery_id, priority in Delivery.objects.filter(
            notification__request_id__in=held, status="queued"
        ).values_list("id", "priority")
    ]
    if waiting:
        transaction.on_commit(lambda: enqueue_many(waiting))
    return len(held)


def _cancel(deliveries: QuerySet[Delivery], *, actor: str = "", audit: bool = False) -> int:
    """The caller's and staff's cancels, through the one cancel
    (:func:`notifications.services.cancellation.deliveries_cancel_pending`)."""
    reason = f"cancelled by {actor}" if actor else CANCELLED_BY_CALLER
    return len(deliveries_cancel_pending(deliveries, reason=reason, actor=actor, audit=audit))


@transaction.atomic
def request_reschedule(
    *, caller: str, request_id: uuid.UUID | str, scheduled_at: dt.datetime
) -> NotificationRequest:
    """Moves the still-scheduled deliveries of a request to ``scheduled_at``."""
    request = request_get(caller=caller, request_id=request_id)
    if scheduled_at <= timezone.now():
        raise APIError(
            "scheduled_at must be in the future.",
            code="validation_error",
            fields={"scheduled_at": ["Must be in the future."]},
        )
    moved = Delivery.objects.filter(notification__request=request, status="scheduled").update(
        scheduled_for=scheduled_at, updated_at=timezone.now()
    )
    if not moved:
        raise ConflictError("Nothing of this request is still scheduled.", code="not_scheduled")
    before = request.scheduled_at
    request.scheduled_at = scheduled_at
    request.save(update_fields=["scheduled_at"])
    audit_record(
        "notification_request.reschedule",
        "notifications.notificationrequest",
        request.pk,
        changes={"scheduled_at": [str(before), str(scheduled_at)], "deliveries": moved},
    )
    return request
