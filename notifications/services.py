"""The verbs of notifications: send, schedule, cancel, deliver, track, read.

Only this module writes notification rows. See "The delivery pipeline" in DESIGN.md.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import random
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from analytics import events
from communication import identity, realtime, rows
from communication import services as core_services
from communication.circuit import CircuitBreaker, CircuitOpenError
from communication.exceptions import (
    APIError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    UnprocessableError,
)
from communication.models import Category, User, normalize_e164
from notifications import rendering, resolution, selectors
from notifications.enqueue import enqueue_many
from notifications.models import (
    Consent,
    Delivery,
    Device,
    IdempotencyKey,
    Notification,
    NotificationPreference,
    NotificationRequest,
    ProviderEvent,
    QuietHours,
    Suppression,
)
from notifications.providers import ratelimit, registry
from notifications.providers.base import Message, ProviderError
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
                ProviderEvent.objects.create(
                    provider=event.provider, event_key=event.event_id[:255]
                )
        except IntegrityError:
            return None
    delivery = (
        Delivery.objects.select_for_update()
        .select_related("notification")
        .filter(provider=event.provider, provider_message_id=event.provider_message_id)
        .first()
    )
    if delivery is None:
        logger.info(
            "provider event for an unknown message",
            extra={"provider": event.provider, "event": event.event},
        )
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
        suppression_add(
            channel=delivery.channel, address=delivery.address, reason=suppress, detail=event.reason
        )

    events.record(
        event.event,
        channel=delivery.channel,
        provider=event.provider,
        category=delivery.notification.category_id,
        notification_id=delivery.notification_id,
        delivery_id=delivery.id,
        data={
            "reason": event.reason[:500],
            "applied": bool(changed),
            "occurred_at": event.occurred_at.isoformat(),
            **event.data,
        },
    )
    return delivery


# ----------------------------------------------------------------------------------- sending


@dataclass
class SendOutcome:
    status_code: int
    body: dict
    replay: bool = False


def _request_hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _idempotency_claim(caller: str, key: str, request_hash: str) -> IdempotencyKey | None:
    """Claims ``key`` in its own committed transaction; returns the earlier claim when there is
    one (after checking it matches), None when this request now owns the key."""
    cutoff = timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
    IdempotencyKey.objects.filter(caller=caller, key=key, created_at__lt=cutoff).delete()
    try:
        with transaction.atomic():
            IdempotencyKey.objects.create(caller=caller, key=key, request_hash=request_hash)
        return None
    except IntegrityError:
        existing = IdempotencyKey.objects.get(caller=caller, key=key)
    if existing.request_hash != request_hash:
        raise UnprocessableError(
            "This Idempotency-Key was used with a different request body.",
            code="idempotency_mismatch",
        )
    if existing.in_flight:
        raise ConflictError(
            "A request with this Idempotency-Key is still being processed; retry shortly.",
            code="idempotency_in_progress",
        )
    return existing


def notification_send(*, caller: str, payload: dict, idempotency_key: str = "") -> SendOutcome:
    """Accepts a notification request (already validated by the API's serializer).

    Resolves recipients, channels, preferences, consent, suppression, schedules and quiet hours,
    then in one transaction writes the request, a Notification per recipient and a Delivery per
    (notification, channel); deliveries ready to go are enqueued once that commits. With an
    ``idempotency_key`` a replay returns the first answer (``replay=True``); a different body is a
    422, a replay while the first is still running a 409.
    """
    if not idempotency_key:
        # Its writes are one statement (and the in-app events with it): no outer transaction.
        return SendOutcome(202, _send(caller=caller, payload=payload, idempotency_key=""))
    claimed = _idempotency_claim(caller, idempotency_key, _request_hash(payload))
    if claimed is not None:
        return SendOutcome(claimed.status_code, claimed.response, replay=True)
    try:
        with transaction.atomic():
            body = _send(caller=caller, payload=payload, idempotency_key=idempotency_key)
            IdempotencyKey.objects.filter(caller=caller, key=idempotency_key).update(
                in_flight=False, status_code=202, response=body
            )
    except BaseException:
        IdempotencyKey.objects.filter(caller=caller, key=idempotency_key, in_flight=True).delete()
        raise
    return SendOutcome(202, body)


def _resolve_recipients(specs: list[dict]) -> list[resolution.Recipient]:
    if len(specs) > settings.NOTIFICATIONS_MAX_RECIPIENTS:
        raise PayloadTooLargeError(
            f"At most {settings.NOTIFICATIONS_MAX_RECIPIENTS} recipients per request; "
            "use the bulk API for more."
        )
    user_ids = [s["user_id"] for s in specs if s.get("user_id")]
    users = (
        {u.external_id: u for u in User.objects.filter(external_id__in=user_ids)}
        if user_ids
        else {}
    )
    recipients = []
    unknown: dict[str, list[str]] = {}
    for i, spec in enumerate(specs):
        if spec.get("user_id"):
            user = users.get(spec["user_id"])
            if user is None:
                try:
                    user = core_services.user_resolve(spec["user_id"])
                except identity.UnknownUserError:
                    unknown[f"recipients[{i}].user_id"] = [f"Unknown user {spec['user_id']!r}."]
                    continue
                except identity.IdentityUnavailableError:
                    unknown[f"recipients[{i}].user_id"] = [
                        "User not known here and the identity service is unavailable."
                    ]
                    continue
                users[user.external_id] = user
            recipients.append(resolution.Recipient(spec=spec, user=user))
        else:
            recipients.append(
                resolution.Recipient(
                    spec=spec,
                    email=(spec.get("email") or "").lower(),
                    phone=spec.get("phone") or "",
                )
            )
    if unknown:
        raise APIError("Some recipients are unknown.", code="unknown_user", fields=unknown)
    return recipients


def _load_facts(category: Category, recipients: list[resolution.Recipient]) -> resolution.Facts:
    facts = resolution.Facts(category=category)
    user_pks = [r.user.pk for r in recipients if r.user is not None]
    if user_pks:
        for user_id, channel, enabled in NotificationPreference.objects.filter(
            user_id__in=user_pks, category=category
        ).values_list("user_id", "channel", "enabled"):
            facts.preferences[(user_id, channel)] = enabled
        if category.requires_consent:
            for row in (
                Consent.objects.filter(user_id__in=user_pks)
                .filter(Q(category__isnull=True) | Q(category=category))
                .order_by("-created_at", "-id")
                .values_list("user_id", "channel", "category_id", "granted")
            ):
                facts.consents.setdefault(row[0], []).append((row[1], row[2] or "", row[3]))
        for user_id, start, end in QuietHours.objects.filter(
            user_id__in=user_pks, enabled=True
        ).values_list("user_id", "start", "end"):
            facts.quiet[user_id] = (start, end)
        facts.devices = dict(
            Device.objects.filter(user_id__in=user_pks, active=True)
            .values("user_id")
            .annotate(n=Count("id"))
            .values_list("user_id", "n")
        )
    addresses = set()
    for r in recipients:
        for channel in ("email", "sms"):
            address = resolution.address_for(r, channel)
            if address:
                addresses.add((channel, address))
    if addresses:
        # Written out: the ORM's compiler cost more than the query (one index probe per pair).
        with connection.cursor() as cursor:
            pairs = " OR ".join(["(channel = %s AND address = %s)"] * len(addresses))
            cursor.execute(
                f"SELECT channel, address, reason FROM notifications_suppression WHERE {pairs}",  # noqa: S608
                [value for pair in sorted(addresses) for value in pair],
            )
            for channel, address, reason in cursor.fetchall():
                facts.suppressed[(channel, address)] = reason
    return facts


def _scheduled_for(payload: dict, recipient: resolution.Recipient) -> dt.datetime | None:
    at = payload.get("scheduled_at")
    if at is None:
        return None
    if payload.get("scheduled_local"):
        tz = recipient.user.timezone if recipient.user is not None else ""
        return resolution.local_to_utc(at.replace(tzinfo=None), tz)
    return at if timezone.is_aware(at) else at.replace(tzinfo=dt.UTC)


def _send(*, caller: str, payload: dict, idempotency_key: str) -> dict:
    category = rows.get(Category, "key", payload.get("category") or "transactional")
    if category is None:
        raise APIError(
            f"No category {payload.get('category')!r}.",
            code="unknown_category",
            fields={"category": ["Unknown category."]},
        )
    recipients = _resolve_recipients(payload["recipients"])
    facts = _load_facts(category, recipients)
    requested = payload.get("channels") or "auto"
    family = payload.get("template") or ""
    content = payload.get("content") or {}
    data = payload.get("data") or {}
    priority = payload.get("priority") or "normal"
    now = timezone.now()

    every_channel = sorted(
        {c for r in recipients for c in resolution.channels_for(r, requested, facts)}
    )
    templates = rendering.template_keys(family, every_channel) if family else {}
    if family and not templates:
        raise APIError(
            f"No template {family!r} for {', '.join(every_channel) or 'any channel'}.",
            code="unknown_template",
            fields={"template": ["Unknown template."]},
        )

    variable_schemas = rendering.schemas(templates) if templates else []

    request = NotificationRequest(
        caller=caller,
        idempotency_key=idempotency_key,
        category=category,
        template_key=family,
        content=content,
        data=data,
        locale=payload.get("locale") or "",
        priority=priority,
        channels=requested if isinstance(requested, list) else [requested],
        scheduled_at=payload.get("scheduled_at"),
        scheduled_local=bool(payload.get("scheduled_local")),
    )
    notifications: list[Notification] = []
    deliveries: list[Delivery] = []
    realtime_items: list[Notification] = []
    for recipient in recipients:
        channels = resolution.channels_for(recipient, requested, facts)
        when = _scheduled_for(payload, recipient)
        notification = Notification(
            request=request,
            user=recipient.user,
            recipient=recipient.spec,
            email=recipient.email,
            phone=recipient.phone,
            category=category,
            locale=payload.get("locale") or (recipient.user.locale if recipient.user else ""),
            data=data,
        )
        decisions = []
        for channel in channels:
            decision = resolution.decide(
                recipient, channel, facts=facts, priority=priority, now=now, scheduled_for=when
            )
            if (
                family
                and channel not in templates
                and decision.status not in ("skipped", "suppressed")
            ):
                decision = resolution.Decision(
                    channel,
                    "skipped",
                    address=decision.address,
                    reason=f"template {family!r} has no {channel} version",
                )
            decisions.append(decision)
        context = rendering.recipient_context(
            data, user=recipient.user, email=recipient.email, phone=recipient.phone
        )
        if variable_schemas:
            rendering.validate_data(variable_schemas, context)
        inbox = next(
            (
                d
                for d in decisions
                if d.channel == "in_app" and d.status in ("delivered", "scheduled")
            ),
            None,
        )
        if inbox is not None or channels == []:
            _fill_inbox(notification, recipient, family, templates, content, context)
        notifications.append(notification)
        for decision in decisions:
            stamp = {"queued_at": now} if decision.status in ("queued", "delivered") else {}
            if decision.status == "delivered":
                stamp["delivered_at"] = now
            deliveries.append(
                Delivery(
                    notification=notification,
                    channel=decision.channel,
                    address=decision.address,
                    status=decision.status,
                    reason=decision.reason[:255],
                    priority=priority,
                    scheduled_for=decision.scheduled_for,
                    **stamp,
                )
            )
        if inbox is not None and inbox.status == "delivered":
            realtime_items.append(notification)

    event_rows = events.build_many(
        [
            {
                "type": d.status,
                "channel": d.channel,
                "category": category.key,
                "caller": caller,
                "notification_id": d.notification.id,
                "delivery_id": d.id,
                "data": {"reason": d.reason} if d.reason else {},
            }
            for d in deliveries
        ]
    )
    # One statement is atomic on its own: a transaction only when in-app events join it.
    with transaction.atomic(savepoint=False) if realtime_items else nullcontext():
        rows.insert_all([[request], notifications, deliveries, event_rows])
        for notification in realtime_items:
            _publish_created(notification)
    to_enqueue = [(str(d.id), priority) for d in deliveries if d.status == "queued"]
    if to_enqueue:
        transaction.on_commit(lambda: enqueue_many(to_enqueue))
    return request_body(request, notifications, deliveries)


def _fill_inbox(notification, recipient, family, templates, content, data) -> None:
    """Renders the in-app title and body now: the inbox item is the message."""
    rendered = (
        rendering.render(
            channel="in_app",
            template_key=templates.get("in_app", ""),
            content=content if not family else {},
            data=data,
            locale=notification.locale,
            timezone=recipient.user.timezone if recipient.user else "",
            recipient=recipient.user.external_id if recipient.user else None,
        )
        if (templates.get("in_app") or not family)
        else {}
    )
    notification.title = (
        rendered.get("title") or content.get("title") or content.get("subject") or ""
    )[:500]
    notification.body = rendered.get("body") or content.get("body") or ""
    action = (
        rendered.get("action_url")
        or (rendered.get("data") or {}).get("action_url")
        or content.get("action_url")
        or ""
    )
    notification.action_url = action[:2000]


def _recipient_view(notification: Notification) -> dict:
    return dict(notification.recipient)


def request_body(request: NotificationRequest, notifications, deliveries) -> dict:
    by_notification: dict = {}
    for d in deliveries:
        by_notification.setdefault(d.notification_id, []).append(
            {
                "id": str(d.id),
                "channel": d.channel,
                "status": d.status,
                "reason": d.reason or None,
                "scheduled_for": d.scheduled_for.isoformat() if d.scheduled_for else None,
            }
        )
    return {
        "request_id": str(request.id),
        "status": "cancelled" if request.cancelled_at else "accepted",
        "category": request.category_id,
        "priority": request.priority,
        "created_at": request.created_at.isoformat() if request.created_at else None,
        "notifications": [
            {
                "id": str(n.id),
                "recipient": _recipient_view(n),
                "deliveries": by_notification.get(n.id, []),
            }
            for n in notifications
        ],
    }


def _publish_created(notification: Notification) -> None:
    unread = Notification.objects.filter(
        user=notification.user, read_at__isnull=True, dismissed_at__isnull=True
    ).count()
    realtime.publish_event(
        notification.user_id,
        "notification.created",
        {
            "id": str(notification.id),
            "title": notification.title,
            "body": notification.body,
            "category": notification.category_id,
            "action_url": notification.action_url or None,
            "created_at": (notification.created_at or timezone.now()).isoformat(),
            "unread": unread,
        },
    )


# ------------------------------------------------------------------------ request management


def request_get(*, caller: str, request_id) -> NotificationRequest:
    request = NotificationRequest.objects.filter(id=request_id, caller=caller).first()
    if request is None:
        raise NotFoundError("No such request.")
    return request


def request_status(request: NotificationRequest) -> dict:
    notifications = list(request.notifications.order_by("created_at", "id"))
    deliveries = Delivery.objects.filter(notification__request=request).order_by("created_at")
    return request_body(request, notifications, list(deliveries))


CANCELLABLE = ("scheduled", "queued")


@transaction.atomic
def request_cancel(*, caller: str, request_id) -> NotificationRequest:
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
    *, caller: str, request_id, scheduled_at: dt.datetime
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


# --------------------------------------------------------------------------------- delivering


def provider_breaker(alias: str) -> CircuitBreaker:
    return CircuitBreaker(
        f"provider:{alias}",
        failure_threshold=settings.PROVIDER_BREAKER_THRESHOLD,
        reset_timeout=settings.PROVIDER_BREAKER_RESET_SECONDS,
    )


def deliveries_claim(delivery_ids) -> list[Delivery]:
    """Takes the due, queued deliveries among ``delivery_ids`` for this worker, in one
    conditional ``UPDATE … RETURNING`` (status and lease): a second copy of the task finds nothing
    to claim. Rows another transaction holds at this instant are skipped, not waited for (no lock
    cycles between workers claiming overlapping batches; the sweep re-enqueues one left queued).
    The same statement reads what sending needs: notification, request, category and user.
    """
    ids = list(dict.fromkeys(uuid.UUID(str(i)) for i in delivery_ids))
    if not ids:
        return []
    now = timezone.now()
    lease = now + dt.timedelta(seconds=settings.DELIVERY_LEASE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(_claim_statement(), [ids, now, now, now, lease])
        found = cursor.fetchall()
    claimed = []
    widths = [len(m._meta.concrete_fields) for m in _CLAIMED]
    for row in found:
        parts, start = [], 0
        for width in widths:
            parts.append(row[start : start + width])
            start += width
        delivery, notification, request, category, user = (
            rows.instance(model, part) if part[0] is not None else None  # no user: all NULL
            for model, part in zip(_CLAIMED, parts, strict=True)
        )
        notification.request, notification.category, notification.user = request, category, user
        delivery.notification = notification
        claimed.append(delivery)
    order = {i: n for n, i in enumerate(ids)}
    return sorted(claimed, key=lambda d: order[d.id])


_CLAIMED = (Delivery, Notification, NotificationRequest, Category, User)


@functools.cache
def _claim_statement() -> str:
    select = ", ".join(
        rows.select_list(model, alias)
        for model, alias in zip(_CLAIMED, ("claimed", "n", "r", "c", "u"), strict=True)
    )
    return f"""
        WITH due AS (
            SELECT id FROM notifications_delivery
            WHERE id = ANY(%s) AND status = 'queued'
              AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
            ORDER BY id FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE notifications_delivery AS d
            SET status = 'sending', attempts = d.attempts + 1, sending_at = %s, updated_at = %s,
                lease_until = %s
            FROM due WHERE d.id = due.id
            RETURNING d.*
        )
        SELECT {select}
        FROM claimed
        JOIN notifications_notification AS n ON n.id = claimed.notification_id
        JOIN notifications_notificationrequest AS r ON r.id = n.request_id
        JOIN {Category._meta.db_table} AS c ON c.key = n.category_id
        LEFT JOIN {User._meta.db_table} AS u ON u.{User._meta.pk.column} = n.user_id
    """  # noqa: S608  (names from the models)


def delivery_claim(delivery_id) -> Delivery | None:
    """Takes one delivery for this worker (see :func:`deliveries_claim`)."""
    claimed = deliveries_claim([delivery_id])
    return claimed[0] if claimed else None


def _message_for(delivery: Delivery, batch: _Batch | None = None) -> Message:
    notification = delivery.notification
    request = notification.request
    user = notification.user
    family = request.template_key
    template_key = ""
    if family:
        template_key = (batch or _Batch()).template_key(family, delivery.channel)
        if not template_key:
            raise ProviderError(f"template {family!r} has no {delivery.channel} version")
    rendered = rendering.render(
        channel=delivery.channel,
        template_key=template_key,
        content=request.content,
        data=rendering.recipient_context(
            request.data, user=user, email=notification.email, phone=notification.phone
        ),
        locale=notification.locale,
        timezone=user.timezone if user else "",
        recipient=user.external_id if user else None,
    )
    delivery.template_version = rendered.get("version")
    delivery.variant = rendered.get("variant") or ""
    headers = {}
    if delivery.channel == "email":
        from notifications import unsubscribe

        headers = unsubscribe.headers_for(delivery)
    return Message(
        channel=delivery.channel,
        to=delivery.address,
        subject=rendered.get("subject", ""),
        text=rendered.get("text") or rendered.get("body", ""),
        html=rendered.get("html", ""),
        title=rendered.get("title", ""),
        data=rendered.get("data") or {},
        headers=headers,
        image=rendered.get("image") or "",
        link=rendered.get("deep_link") or rendered.get("action_url") or "",
        from_email=settings.DEFAULT_FROM_EMAIL,
        delivery_id=str(delivery.id),
        category=notification.category_id,
        tags=[notification.category_id],
    )


def _finish(delivery: Delivery, **fields) -> bool:
    """Records an outcome, only if this worker still holds the delivery (its lease may have
    expired and another worker taken over)."""
    fields["updated_at"] = timezone.now()
    fields.setdefault("lease_until", None)
    return bool(
        Delivery.objects.filter(
            id=delivery.id, status="sending", attempts=delivery.attempts
        ).update(**fields)
    )


def _retry_delay(delivery: Delivery, error: ProviderError | None) -> float:
    base = settings.DELIVERY_RETRY_BASE_SECONDS * 2 ** max(delivery.provider_attempts - 1, 0)
    delay = base * (0.5 + random.random())  # full jitter around the exponential step
    if delivery.priority in ("high", "urgent"):
        delay = min(delay, 15.0)  # failover within 60 s of the first failure
    if error is not None and error.retry_after:
        delay = max(delay, error.retry_after)
    return min(delay, 3600.0)


def _event(delivery: Delivery, type_: str, *, provider: str = "", latency_ms=None, **data):
    return {
        "type": type_,
        "channel": delivery.channel,
        "provider": provider,
        "category": delivery.notification.category_id,
        "caller": delivery.notification.request.caller,
        "notification_id": delivery.notification_id,
        "delivery_id": delivery.id,
        "latency_ms": latency_ms,
        "data": data,
    }


def _record(delivery: Delivery, type_: str, *, provider: str = "", latency_ms=None, **data):
    events.record(**_event(delivery, type_, provider=provider, latency_ms=latency_ms, **data))


class _Batch:
    """What one batch of deliveries shares: template look-ups, the breakers it found closed, and
    the successes not yet written.

    Successes are written together (one UPDATE and one events INSERT) at most
    ``FLUSH_EVERY`` sends or ``FLUSH_SECONDS`` after the first unwritten one: that is the window
    in which a crash after the provider's answer leaves a delivery to be sent again once its lease
    expires (DESIGN.md, "The delivery pipeline" 6), kept far below the lease.
    """

    FLUSH_EVERY = 25
    FLUSH_SECONDS = 0.5

    def __init__(self):
        self.templates: dict[tuple[str, str], str] = {}
        self.closed: set[str] = set()  # breakers checked closed, no failure since
        self.succeeded: set[str] = set()  # breakers told of a success, no failure since
        self.sent: list[tuple] = []
        self.first_unwritten = 0.0

    def template_key(self, family: str, channel: str) -> str:
        if (family, channel) not in self.templates:
            self.templates[(family, channel)] = rendering.template_keys(family, [channel]).get(
                channel, ""
            )
        return self.templates[(family, channel)]

    def before_call(self, alias: str) -> None:
        """The provider's breaker, asked once per batch while its calls succeed."""
        if alias not in self.closed:
            provider_breaker(alias).before_call()
            self.closed.add(alias)

    def record_success(self, alias: str) -> None:
        if alias not in self.succeeded:
            provider_breaker(alias).record_success()
            self.succeeded.add(alias)

    def record_failure(self, alias: str) -> None:
        self.closed.discard(alias)
        self.succeeded.discard(alias)

    def add_sent(self, delivery, alias, index, result, latency) -> None:
        if not self.sent:
            self.first_unwritten = time.monotonic()
        self.sent.append((delivery, alias, index, result, latency, timezone.now()))
        if (
            len(self.sent) >= self.FLUSH_EVERY
            or time.monotonic() - self.first_unwritten >= self.FLUSH_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        if self.sent:
            sent, self.sent = self.sent, []
            _record_sent_many(sent)


def delivery_attempt(delivery_id) -> str:
    """Sends one delivery once: claim, render, pick a provider, call it, record the outcome.

    Safe to run twice: a second copy finds nothing to claim. Returns what happened (for logs and
    tests): not_claimed, sent, failed, ambiguous, retry, failover, delayed.
    """
    return deliveries_attempt([delivery_id])[str(delivery_id)]


def deliveries_attempt(delivery_ids) -> dict[str, str]:
    """Sends a batch of deliveries, each once (see :func:`delivery_attempt`): one claim for the
    batch, then each is rendered and sent in turn; its failure is handled alone (retry, failover,
    failed) while the others go on; successes are recorded together. Returns
    ``{delivery id: outcome}``.

    A delivery the batch has not reached when half its lease has passed (slow providers) is put
    back in the queue rather than sent late: past its lease the sweep may hand it to another
    worker.
    """
    outcomes = {str(i): "not_claimed" for i in delivery_ids}
    deliveries = deliveries_claim(delivery_ids)
    claimed_at = time.monotonic()
    batch = _Batch()
    try:
        for delivery in deliveries:
            if time.monotonic() - claimed_at > settings.DELIVERY_LEASE_SECONDS / 2:
                batch.flush()
                outcomes[str(delivery.id)] = _requeue(delivery, 0, "delayed")
                continue
            outcomes[str(delivery.id)] = _attempt(delivery, batch)
    finally:
        batch.flush()
    return outcomes


def _attempt(delivery: Delivery, batch: _Batch) -> str:
    try:
        message = _message_for(delivery, batch)
    except (APIError, ProviderError) as exc:
        detail = getattr(exc, "detail", None) or str(exc)
        _fail(delivery, "render_error", error=f"render: {detail}")
        return "failed"

    if delivery.channel == "push":
        return _push_attempt(delivery, message)
    chain = registry.chain(delivery.channel)
    index = delivery.provider_index
    # Skip providers whose circuit is open; if all are open, wait for the first to half-open.
    while index < len(chain):
        try:
            batch.before_call(chain[index].alias)
            break
        except CircuitOpenError:
            index += 1
    if index >= len(chain):
        if delivery.provider_index < len(chain) and len(chain) > 0:
            return _requeue(
                delivery,
                settings.PROVIDER_BREAKER_RESET_SECONDS,
                "delayed",
                provider_index=delivery.provider_index,
            )
        _fail(delivery, "providers_exhausted", error=delivery.error or "every provider failed")
        return "failed"
    provider = chain[index]

    wait = ratelimit.acquire(provider)
    if wait > 0:
        return _requeue(delivery, wait, "delayed", provider_index=index)

    started = time.perf_counter()
    try:
        result = provider.send(message)
    except ProviderError as exc:
        latency = (time.perf_counter() - started) * 1000
        batch.record_failure(provider.alias)
        return _on_provider_error(delivery, provider, index, exc, latency, chain)
    latency = (time.perf_counter() - started) * 1000
    batch.record_success(provider.alias)
    batch.add_sent(delivery, provider.alias, index, result, latency)
    return "sent"


def _record_sent_many(sent: list[tuple]) -> None:
    """Records providers' acceptances (``(delivery, alias, index, result, latency, at)``) in
    one statement: an UPDATE, and the events of the deliveries it updated (each only if this
    worker still holds the delivery)."""
    values = [
        (
            delivery.id,
            delivery.attempts,
            "delivered" if result.status == "delivered" else "sent",
            alias,
            index,
            result.provider_message_id[:255],
            at,
            delivery.template_version,
            delivery.variant,
        )
        for delivery, alias, index, result, latency, at in sent
    ]
    columns = list(zip(*values, strict=True))
    insert_events, event_rows = rows.insert_statement(
        events.build_many(
            [
                event
                for delivery, alias, _index, result, latency, _at in sent
                for event in _sent_events(delivery, alias, result, latency)
            ]
        ),
        where="r.delivery_id IN (SELECT id FROM recorded)",
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH recorded AS ({_UPDATE_SENT}) {insert_events}",
            [timezone.now(), *(list(c) for c in columns), event_rows],
        )


_UPDATE_SENT = """
    UPDATE notifications_delivery AS d
    SET status = v.status, provider = v.provider, provider_index = v.provider_index,
        provider_message_id = v.message_id, sent_at = v.at,
        delivered_at = CASE WHEN v.status = 'delivered' THEN v.at END, error = '',
        template_version = v.template_version, variant = v.variant,
        updated_at = %s, lease_until = NULL
    FROM unnest(%s::uuid[], %s::int[], %s::text[], %s::text[], %s::int[], %s::text[],
                %s::timestamptz[], %s::uuid[], %s::text[])
         AS v(id, attempts, status, provider, provider_index, message_id, at,
              template_version, variant)
    WHERE d.id = v.id AND d.status = 'sending' AND d.attempts = v.attempts
    RETURNING d.id
"""


def _record_sent(
    delivery: Delivery, alias: str, index: int, result, latency: float, **event_data
) -> str:
    """Records a provider's acceptance, if this worker still holds the delivery."""
    now = timezone.now()
    status = "delivered" if result.status == "delivered" else "sent"
    with transaction.atomic():
        if _finish(
            delivery,
            status=status,
            provider=alias,
            provider_index=index,
            provider_message_id=result.provider_message_id[:255],
            sent_at=now,
            delivered_at=now if status == "delivered" else None,
            error="",
            template_version=delivery.template_version,
            variant=delivery.variant,
        ):
            events.record_many(_sent_events(delivery, alias, result, latency, **event_data))
    return "sent"


def _sent_events(delivery: Delivery, alias: str, result, latency: float, **event_data) -> list:
    """The events of a provider's acceptance: ``sent``, and ``delivered`` when it says so."""
    sent = [
        _event(
            delivery,
            "sent",
            provider=alias,
            latency_ms=round(latency, 2),
            attempts=delivery.attempts,
            **event_data,
        )
    ]
    if result.status == "delivered":
        sent.append(_event(delivery, "delivered", provider=alias))
    return sent


def _push_attempt(delivery: Delivery, message: Message) -> str:
    """Push fans out to every device of the user (FCM and Web Push serve different devices; they
    are not failover alternatives): ``notifications.push`` sends and answers like one provider,
    recorded here as the chain's answers are."""
    from notifications import push

    started = time.perf_counter()
    try:
        result = push.push_deliver(delivery, message)
    except push.PushDelayedError as exc:
        return _requeue(delivery, exc.delay, "delayed")
    except ProviderError as exc:
        latency = (time.perf_counter() - started) * 1000
        sender = push.PushSender(getattr(exc, "provider", "push"))
        return _on_provider_error(delivery, sender, 0, exc, latency, [sender])
    latency = (time.perf_counter() - started) * 1000
    return _record_sent(
        delivery,
        result.raw.get("provider", "push"),
        0,
        result,
        latency,
        devices=result.raw.get("devices", {}),
    )


def _requeue(delivery: Delivery, delay: float, outcome: str, **fields) -> str:
    at = timezone.now() + dt.timedelta(seconds=delay)
    if _finish(delivery, status="queued", next_attempt_at=at, **fields):
        enqueue_many([(str(delivery.id), delivery.priority)], countdown=delay)
    return outcome


def _fail(
    delivery: Delivery,
    reason: str,
    *,
    error: str,
    provider: str = "",
    provider_index: int | None = None,
    latency_ms: float | None = None,
    **event_data,
) -> bool:
    """Marks the delivery failed (if this worker still holds it) and records why."""
    fields = {"status": "failed", "failed_at": timezone.now(), "error": error[:2000]}
    if provider:
        fields["provider"] = provider
    if provider_index is not None:
        fields["provider_index"] = provider_index
    with transaction.atomic():
        if not _finish(delivery, **fields):
            return False
        _record(
            delivery,
            "failed",
            provider=provider,
            latency_ms=latency_ms,
            reason=reason,
            **event_data,
        )
    return True


def _on_provider_error(delivery, provider, index, exc: ProviderError, latency, chain) -> str:
    now = timezone.now()
    error = f"{provider.alias}: {exc}"[:2000]
    if exc.permanent:
        with transaction.atomic():
            if (
                _fail(
                    delivery,
                    exc.code or "permanent",
                    error=error,
                    provider=provider.alias,
                    provider_index=index,
                    latency_ms=round(latency, 2),
                    detail=str(exc)[:500],
                )
                and exc.suppress
                and delivery.address
            ):
                suppression_add(
                    channel=delivery.channel,
                    address=delivery.address,
                    reason=exc.code
                    if exc.code in Suppression.Reason.values
                    else Suppression.Reason.INVALID,
                    detail=str(exc),
                )
        return "failed"

    provider_breaker(provider.alias).record_failure()
    if exc.ambiguous and not settings.RESEND_AMBIGUOUS.get(delivery.channel, True):
        with transaction.atomic():
            if _finish(
                delivery,
                status="ambiguous",
                provider=provider.alias,
                provider_index=index,
                error=error,
            ):
                _record(
                    delivery,
                    "ambiguous",
                    provider=provider.alias,
                    latency_ms=round(latency, 2),
                    error=str(exc)[:500],
                )
        return "ambiguous"

    delivery.provider_attempts += 1
    first_failure = delivery.first_failure_at or now
    urgent = delivery.priority in ("high", "urgent")
    exhausted = delivery.provider_attempts >= settings.DELIVERY_MAX_ATTEMPTS_PER_PROVIDER or (
        urgent and (now - first_failure).total_seconds() >= 45
    )
    _record(
        delivery,
        "retry",
        provider=provider.alias,
        latency_ms=round(latency, 2),
        error=str(exc)[:500],
        attempt=delivery.provider_attempts,
    )
    if exhausted:
        if index + 1 >= len(chain):
            _fail(
                delivery,
                "providers_exhausted",
                error=error,
                provider=provider.alias,
                provider_index=index,
            )
            return "failed"
        _requeue(
            delivery,
            0,
            "failover",
            provider_index=index + 1,
            provider_attempts=0,
            first_failure_at=first_failure,
            error=error,
        )
        return "failover"
    _requeue(
        delivery,
        _retry_delay(delivery, exc),
        "retry",
        provider_index=index,
        provider_attempts=delivery.provider_attempts,
        first_failure_at=first_failure,
        error=error,
    )
    return "retry"


# ------------------------------------------------------------------------------------ sweeps


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
            .values_list("id", "priority")[:batch]
        )
        if lost:
            Delivery.objects.filter(id__in=[d for d, _ in lost]).update(updated_at=now)
            ids2 = [(str(d), p) for d, p in lost]
            transaction.on_commit(lambda: enqueue_many(ids2))
            counts["requeued"] = len(lost)
    with transaction.atomic():
        due = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .select_related("notification")
            .filter(status="scheduled", scheduled_for__lte=now)[:batch]
        )
        to_enqueue = []
        for delivery in due:
            if delivery.channel == "in_app":
                delivery.status, delivery.delivered_at = "delivered", now
                _publish_created(delivery.notification)
            else:
                delivery.status = "queued"
                to_enqueue.append((str(delivery.id), delivery.priority))
            delivery.queued_at = now
            delivery.updated_at = now
        if due:
            Delivery.objects.bulk_update(due, ["status", "delivered_at", "queued_at", "updated_at"])
            events.record_many(
                [
                    {
                        "type": d.status,
                        "channel": d.channel,
                        "category": d.notification.category_id,
                        "notification_id": d.notification_id,
                        "delivery_id": d.id,
                    }
                    for d in due
                ]
            )
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


# --------------------------------------------------------------------------------- the inbox


@transaction.atomic
def notification_mark(*, user, notification_id, read: bool) -> Notification:
    """Marks one notification read (or unread again) and tells the user's other sockets."""
    notification = selectors.notification_get(user, notification_id)
    value = timezone.now() if read else None
    if (notification.read_at is None) == read:
        notification.read_at = value
        notification.save(update_fields=["read_at"])
        realtime.publish_event(
            user.pk,
            "notification.read" if read else "notification.unread",
            {
                "ids": [str(notification.id)],
                "unread": unread_count(user),
            },
        )
    return notification


@transaction.atomic
def notification_read_all(*, user) -> int:
    now = timezone.now()
    ids = list(
        Notification.objects.filter(
            user=user, read_at__isnull=True, dismissed_at__isnull=True
        ).values_list("id", flat=True)
    )
    if ids:
        Notification.objects.filter(id__in=ids).update(read_at=now)
        realtime.publish_event(
            user.pk,
            "notification.read",
            {"ids": [str(i) for i in ids[:1000]], "all": True, "unread": 0},
        )
    return len(ids)


@transaction.atomic
def notification_dismiss(*, user, notification_id) -> None:
    notification = selectors.notification_get(user, notification_id)
    notification.dismissed_at = timezone.now()
    if notification.read_at is None:
        notification.read_at = notification.dismissed_at
    notification.save(update_fields=["dismissed_at", "read_at"])
    realtime.publish_event(
        user.pk,
        "notification.dismissed",
        {"ids": [str(notification.id)], "unread": unread_count(user)},
    )


def unread_count(user) -> int:
    return Notification.objects.filter(
        user=user, read_at__isnull=True, dismissed_at__isnull=True
    ).count()


# --------------------------------------------------------------------- preferences, consent


@transaction.atomic
def preferences_set(*, user, changes: list[dict]) -> None:
    """``changes``: ``[{"category": key, "channel": c, "enabled": bool}]``. Mandatory categories
    cannot be turned off (400)."""
    categories = {
        c.key: c for c in Category.objects.filter(key__in={c["category"] for c in changes})
    }
    errors = {}
    for i, change in enumerate(changes):
        category = categories.get(change["category"])
        if category is None:
            errors[f"preferences[{i}].category"] = [f"Unknown category {change['category']!r}."]
        elif category.mandatory and not change["enabled"]:
            errors[f"preferences[{i}].enabled"] = [f"{category.key} is mandatory."]
    if errors:
        raise APIError("Some preferences cannot be set.", code="validation_error", fields=errors)
    for change in changes:
        NotificationPreference.objects.update_or_create(
            user=user,
            category_id=change["category"],
            channel=change["channel"],
            defaults={"enabled": change["enabled"]},
        )


@transaction.atomic
def quiet_hours_set(*, user, start, end, enabled: bool = True) -> QuietHours | None:
    if start is None or end is None:
        QuietHours.objects.filter(user=user).delete()
        return None
    quiet, _ = QuietHours.objects.update_or_create(
        user=user, defaults={"start": start, "end": end, "enabled": enabled}
    )
    return quiet


def consent_record(
    *,
    user,
    granted: bool,
    source: str,
    channel: str = "",
    category: str | None = None,
    evidence: dict | None = None,
) -> Consent:
    if category and not Category.objects.filter(key=category).exists():
        raise APIError(
            "Unknown category.",
            code="validation_error",
            fields={"category": [f"Unknown category {category!r}."]},
        )
    consent = Consent.objects.create(
        user=user,
        channel=channel or "",
        category_id=category or None,
        granted=granted,
        source=source,
        evidence=evidence or {},
    )
    events.record(
        "consent_granted" if granted else "consent_withdrawn",
        channel=channel,
        category=category or "",
        data={"source": source},
    )
    return consent


def address_normalize(channel: str, value: str) -> str:
    if channel == "sms":
        return normalize_e164(value, settings.SMS_DEFAULT_REGION or None)
    return value.strip().lower()


@transaction.atomic
def unsubscribe_apply(payload: dict, *, source: str) -> str:
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
        what = f"{category.name} messages by {channel}"
    else:
        suppression_add(
            channel=channel,
            address=payload["a"],
            reason=Suppression.Reason.UNSUBSCRIBE,
            detail=source,
        )
        what = f"all messages by {channel} to this address"
    events.record(
        "unsubscribed",
        channel=channel,
        category=payload["c"],
        delivery_id=payload.get("d"),
        data={"source": source},
    )
    return what
