"""Cancelling deliveries not yet handed to a provider: the one cancel every path uses (a caller's
request or ``cancellation_key``, staff in the console, a read of the notification stopping its
escalation, a read conversation stopping messaging's pending email or push).

A cancel is one ``UPDATE … RETURNING`` over the deliveries still pending, which also reads what
their events need (notification and request). A worker's claim skips rows another transaction
holds, and a cancel waits for a claim that holds one and then finds it ``sending``: whichever
comes first wins, and a delivery is never both sent and cancelled.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from analytics import events
from communication import rows
from communication.audit import audit_record
from communication.exceptions import NotFoundError
from communication.models import User
from notifications.escalation import EMAIL_CLICKED, EMAIL_OPENED, PUSH_OPENED
from notifications.models import Delivery, Notification, NotificationRequest
from notifications.services.delivery_events import delivery_event

# Statuses of a delivery not yet handed to a provider.
CANCELLABLE = ("scheduled", "held", "queued")
# Statuses of one a provider has (or may have) been given: too late to cancel.
ALREADY_SENT = ("sending", "sent", "delivered", "ambiguous")
# ``already_sent`` lists at most this many ids (a key may name a large campaign).
ALREADY_SENT_LIST_MAX = 1000

CANCELLED_BY_CALLER = "cancelled by caller"

_M = TypeVar("_M", bound=Model)

# What a cancelled delivery's event needs (``delivery_dimensions``), and no more: reading (and
# decrypting) whole notification and request rows cost most of a large cancel's time.
_DELIVERY_FIELDS = ("id", "notification_id", "channel", "template_version", "variant")
_NOTIFICATION_FIELDS = ("request_id", "category_id", "user_id")
_REQUEST_FIELDS = ("caller", "template_key", "campaign_id", "step_id", "run_id")


def _columns(model: type[Model], alias: str, names: Sequence[str]) -> list[str]:
    columns = {f.attname: f.column for f in model._meta.concrete_fields}
    return [f"{alias}.{connection.ops.quote_name(columns[n])}" for n in names]


def _partial(model: type[_M], values: dict[str, Any]) -> _M:
    """An instance with only ``values`` loaded (the others deferred), as the ORM's ``only()``
    builds one: ``from_db`` takes the values in the model's field order."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[n] for n in names])


@functools.cache
def _cancel_statement(where: str) -> str:
    select = ", ".join(
        [
            *_columns(Delivery, "cancelled", _DELIVERY_FIELDS),
            "cancelled.was",
            *_columns(Notification, "n", _NOTIFICATION_FIELDS),
            *_columns(NotificationRequest, "r", _REQUEST_FIELDS),
        ]
    )
    return f"""
        WITH target AS (
            SELECT d.id, d.status FROM notifications_delivery AS d
            WHERE d.id IN ({where}) AND d.status IN ({", ".join(["%s"] * len(CANCELLABLE))})
            FOR UPDATE OF d
        ), cancelled AS (
            UPDATE notifications_delivery AS d
            SET status = 'cancelled', cancelled_at = %s, updated_at = %s, lease_until = NULL,
                reason = %s
            FROM target WHERE d.id = target.id
            RETURNING d.*, target.status AS was
        )
        SELECT {select}
        FROM cancelled
        JOIN notifications_notification AS n ON n.id = cancelled.notification_id
        JOIN notifications_notificationrequest AS r ON r.id = n.request_id
        ORDER BY cancelled.id
    """  # noqa: S608  (names from the models, the subquery from the ORM)


def deliveries_cancel_pending(
    deliveries: QuerySet[Delivery], *, reason: str, actor: str = "", audit: bool = False
) -> list[Delivery]:
    """The one cancel: marks those of ``deliveries`` not yet handed to a provider
    (:data:`CANCELLABLE`) cancelled, with ``cancelled_at`` and ``reason``, in one statement, and
    records each one's ``cancelled`` event; with ``audit`` (staff's cancels), an audit entry per
    delivery. Returns the cancelled deliveries, with only what their events read loaded (their
    notification's category and user, its request's caller, template and campaign)."""
    subquery, params = deliveries.values("id").query.sql_with_params()
    now = timezone.now()
    stamp = rows.column(Delivery, "cancelled_at", [now])[0]
    with connection.cursor() as cursor:
        cursor.execute(
            _cancel_statement(subquery),
            [*params, *CANCELLABLE, stamp, stamp, reason[:255]],
        )
        found = cursor.fetchall()
    if not found:
        return []
    d_end = len(_DELIVERY_FIELDS)
    n_end = d_end + 1 + len(_NOTIFICATION_FIELDS)
    requests: dict[uuid.UUID, NotificationRequest] = {}
    cancelled: list[Delivery] = []
    was: dict[uuid.UUID, str] = {}
    for row in found:
        delivery = _partial(
            Delivery,
            {**dict(zip(_DELIVERY_FIELDS, row[:d_end], strict=True)), "status": "cancelled"},
        )
        notification = _partial(
            Notification,
            {
                "id": delivery.notification_id,
                **dict(zip(_NOTIFICATION_FIELDS, row[d_end + 1 : n_end], strict=True)),
            },
        )
        request = requests.get(notification.request_id)
        if request is None:
            request = requests[notification.request_id] = _partial(
                NotificationRequest,
                {
                    "id": notification.request_id,
                    **dict(zip(_REQUEST_FIELDS, row[n_end:], strict=True)),
                },
            )
        notification.request = request
        delivery.notification = notification
        was[delivery.id] = row[d_end]
        cancelled.append(delivery)
    data = {"reason": reason, **({"by": actor} if actor else {})}
    events.record_many([delivery_event(d, "cancelled", data=data) for d in cancelled])
    if audit:
        for d in cancelled:
            audit_record(
                "delivery.cancel",
                "notifications.delivery",
                d.pk,
                changes={"status": [was[d.id], "cancelled"]},
            )
    return cancelled


def escalations_stop(notification_ids: Sequence[uuid.UUID | str], *, reason: str) -> int:
    """A read of these notifications: cancels their escalation steps still pending (past the
    first), in the caller's transaction (the read's). Found through the (notification, channel)
    unique index. Returns how many were cancelled."""
    if not notification_ids:
        return 0
    return len(
        deliveries_cancel_pending(
            Delivery.objects.filter(
                notification_id__in=list(notification_ids), escalation_step__gt=0
            ),
            reason=reason,
        )
    )


@transaction.atomic
def escalation_stop_for_delivery(delivery_id: uuid.UUID | str, *, reason: str) -> int:
    """A read signalled on one delivery (an email opened or clicked, a push opened): cancels the
    pending escalation steps of its notification. Returns how many were cancelled."""
    return len(
        deliveries_cancel_pending(
            Delivery.objects.filter(
                notification_id__in=Delivery.objects.filter(id=delivery_id).values(
                    "notification_id"
                ),
                escalation_step__gt=0,
            ),
            reason=reason,
        )
    )


def email_engaged(
    *, delivery_id: uuid.UUID, notification_id: uuid.UUID | None, kind: str, **_: object
) -> None:
    """``analytics.tracking.engaged``'s receiver: a person opened or clicked a tracked email."""
    reason = EMAIL_OPENED if kind == "open" else EMAIL_CLICKED
    if notification_id is not None:
        escalations_stop([notification_id], reason=reason)
    else:
        escalation_stop_for_delivery(delivery_id, reason=reason)


@transaction.atomic
def notification_push_opened(*, user: User, notification_id: uuid.UUID | str) -> int:
    """The user opened a push about ``notification_id`` (their own, else a 404): cancels its
    escalation steps still pending. Returns how many were cancelled."""
    if not Notification.objects.filter(id=notification_id, user=user).exists():
        raise NotFoundError("No such notification.")
    return escalations_stop([notification_id], reason=PUSH_OPENED)


@dataclass
class KeyCancelled:
    """The answer to a cancel by ``cancellation_key``."""

    cancelled: int
    already_sent: list[str] = field(default_factory=list)


def cancellation_key_cancel(
    *, caller: str, key: str, reason: str = CANCELLED_BY_CALLER, report_sent: bool = True
) -> KeyCancelled:
    """Cancels every delivery of ``caller``'s requests sent with ``cancellation_key=key`` not
    yet handed to a provider, and lists (up to :data:`ALREADY_SENT_LIST_MAX`, unless not
    ``report_sent``) those it was too late for. Another caller's requests are never touched;
    an unknown key cancels nothing."""
    # Inside a caller's transaction (a read), no savepoint of its own: it would cost two round
    # trips, and the caller's transaction rolls back whole anyway.
    with transaction.atomic(savepoint=False):
        if not key:
            return KeyCancelled(0)
        mine = Delivery.objects.filter(
            notification__request__caller=caller, notification__request__cancellation_key=key
        )
        cancelled = deliveries_cancel_pending(mine, reason=reason)
        if not report_sent:
            return KeyCancelled(len(cancelled))
        sent = [
            str(i)
            for i in mine.filter(status__in=ALREADY_SENT)
            .order_by("id")
            .values_list("id", flat=True)[:ALREADY_SENT_LIST_MAX]
        ]
        return KeyCancelled(len(cancelled), sent)
