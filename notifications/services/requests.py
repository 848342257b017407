"""A caller's requests after they were accepted: look one up, report its status, cancel or
reschedule what has not gone out yet."""

from __future__ import annotations

import datetime as dt
import uuid

from django.db import transaction
from django.utils import timezone

from analytics import events
from communication.exceptions import APIError, ConflictError, NotFoundError
from notifications.models import Delivery, NotificationRequest
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


# Statuses of a delivery not yet handed to a provider.
CANCELLABLE = ("scheduled", "queued")


@transaction.atomic
def request_cancel(*, caller: str, request_id: uuid.UUID | str) -> NotificationRequest:
    """Cancels every delivery not yet handed to a provider."""
    request = request_get(caller=caller, request_id=request_id)
    now = timezone.now()
    rows = list(
        Delivery.objects.select_for_update()
        .filter(notification__request=request, status__in=CANCELLABLE)
        .values_list("id", "channel", "notification_id")
    )
    Delivery.objects.filter(id__in=[r[0] for r in rows]).update(
        status="cancelled", cancelled_at=now, lease_until=None, updated_at=now
    )
    if request.cancelled_at is None:
        request.cancelled_at = now
        request.save(update_fields=["cancelled_at"])
    events.record_many(
        [
            {
                "type": "cancelled",
                "channel": ch,
                "category": request.category_id,
                "caller": caller,
                "notification_id": nid,
                "delivery_id": did,
            }
            for did, ch, nid in rows
        ]
    )
    return request


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
    request.scheduled_at = scheduled_at
    request.save(update_fields=["scheduled_at"])
    return request
