"""Accepting a notification request: idempotency, recipients, the rules (preferences, consent,
suppression, quiet hours, schedules), and the one transaction that writes the request, its
notifications and their deliveries. See "The delivery pipeline" in DESIGN.md."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypedDict

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from analytics import events
from communication import identity, rows
from communication import services as core_services
from communication.exceptions import (
    APIError,
    ConflictError,
    PayloadTooLargeError,
    UnprocessableError,
)
from communication.faults import fault_point
from communication.models import Category, User
from notifications import metrics, rendering, resolution
from notifications.categories import category_get
from notifications.enqueue import enqueue_many
from notifications.models import (
    Consent,
    Delivery,
    Device,
    IdempotencyKey,
    Notification,
    NotificationPreference,
    NotificationRequest,
    QuietHours,
    suppression_hash,
)
from notifications.services import audience
from notifications.services.delivery_events import delivery_event
from notifications.services.inbox import notifications_publish_created


class DeliveryView(TypedDict):
    id: str
    channel: str
    status: str
    reason: str | None
    scheduled_for: str | None
    # Sent again after a worker died during its provider call: may have arrived twice.
    possibly_duplicate: bool


class NotificationView(TypedDict):
    id: str
    recipient: dict[str, Any]
    deliveries: list[DeliveryView]


class RequestBody(TypedDict):
    """The answer to a send and to a request's status (:func:`request_body`)."""

    request_id: str
    status: str
    category: str
    priority: str
    created_at: str | None
    notifications: list[NotificationView]


@dataclass
class SendOutcome:
    """What ``notification_send`` answers: the HTTP status and body, and whether it is the
    replay of an earlier answer (same ``Idempotency-Key``)."""

    status_code: int
    body: RequestBody
    replay: bool = False


def _request_hash(payload: dict[str, Any]) -> str:
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
    if existing.in_flight and _abandoned_claim_taken(existing):
        return None
    if existing.in_flight:
        raise ConflictError(
            "A request with this Idempotency-Key is still being processed; retry shortly.",
            code="idempotency_in_progress",
        )
    return existing


def _abandoned_claim_taken(claim: IdempotencyKey) -> bool:
    """Takes over a claim left in flight past ``IDEMPOTENCY_IN_FLIGHT_SECONDS`` (its request's
    process died before committing: nothing of it was written). Compare-and-set on its time, so
    of two retries only one takes it."""
    now = timezone.now()
    if claim.created_at > now - dt.timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_SECONDS):
        return False
    return bool(
        IdempotencyKey.objects.filter(
            pk=claim.pk, in_flight=True, created_at=claim.created_at
        ).update(created_at=now)
    )


def notification_send(
    *,
    caller: str,
    payload: dict[str, Any],
    idempotency_key: str = "",
    resent_from: Delivery | None = None,
) -> SendOutcome:
    """Accepts a notification request (already validated by the API's serializer).

    Resolves recipients, channels, preferences, consent, suppression, schedules and quiet hours,
    then in one transaction writes the request, a Notification per recipient and a Delivery per
    (notification, channel); deliveries ready to go are enqueued once that commits. With an
    ``idempotency_key`` a replay returns the first answer (``replay=True``); a different body is a
    422, a replay while the first is still running a 409. ``resent_from`` links the request to
    the delivery staff sent again (:func:`notifications.services.delivery_resend`).
    """
    if not idempotency_key:
        # Its writes are one statement (and the in-app events with it): no outer transaction.
        return SendOutcome(
            202,
            _send(caller=caller, payload=payload, idempotency_key="", resent_from=resent_from),
        )
    status_code, body, replay = idempotent(
        caller=caller,
        key=idempotency_key,
        request_hash=_request_hash(payload),
        call=lambda: _send(
            caller=caller,
            payload=payload,
            idempotency_key=idempotency_key,
            resent_from=resent_from,
        ),
    )
    return SendOutcome(status_code, body, replay=replay)


def idempotent(
    *, caller: str, key: str, request_hash: str, call: Callable[[], Any]
) -> tuple[int, Any, bool]:
    """Runs ``call`` once per ``(caller, key)``: ``(202, its answer, False)`` the first time
    (the answer stored with the claim, in ``call``'s transaction), ``(status, stored answer,
    True)`` for a replay. A different body is a 422, a replay while the first runs a 409."""
    claimed = _idempotency_claim(caller, key, request_hash)
    if claimed is not None:
        # A claim no longer in flight holds the answer it gave (written with ``in_flight``).
        assert claimed.status_code is not None, "a finished idempotency claim without status"
        assert claimed.response is not None, "a finished idempotency claim without answer"
        return claimed.status_code, claimed.response, True
    try:
        with transaction.atomic():
            body = call()
            # A send without a key writes in one statement: this is its only "before commit".
            fault_point("send.before_commit")
            IdempotencyKey.objects.filter(caller=caller, key=key).update(
                in_flight=False, status_code=202, response=body
            )
    except BaseException:
        IdempotencyKey.objects.filter(caller=caller, key=key, in_flight=True).delete()
        raise
    return 202, body, False


def _resolve_recipients(specs: Sequence[dict[str, Any]]) -> list[resolution.Recipient]:
    if len(specs) > settings.NOTIFICATIONS_MAX_RECIPIENTS:
        raise PayloadTooLargeError(
            f"At most {settings.NOTIFICATIONS_MAX_RECIPIENTS} recipients per request; "
            "use the bulk API for more."
        )
    groups = [s for s in specs if audience.is_organization(s)]
    user_ids = [s["user_id"] for s in specs if s.get("user_id")]
    users = (
        {u.external_id: u for u in User.objects.filter(external_id__in=user_ids)}
        if user_ids
        else {}
    )
    recipients = []
    unknown: dict[str, list[str]] = {}
    for i, spec in enumerate(specs):
        if audience.is_organization(spec):
            continue
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
    if groups:
        # Each member once, and not again when the request names them itself.
        limit = settings.NOTIFICATIONS_MAX_RECIPIENTS
        members = audience.organization_members(
            groups,
            limit=limit - len(recipients),
            exclude=[r.user.pk for r in recipients if r.user is not None],
            too_many=f"The organization has more members than the {limit} recipients of a "
            "single request; use the bulk API (POST /api/v1/notifications/bulk).",
        )
        recipients.extend(
            resolution.Recipient(spec=audience.member_spec(user, group["organization"]), user=user)
            for user, group in members
        )
    return recipients


def _load_facts(category: Category, recipients: list[resolution.Recipient]) -> resolution.Facts:
    facts = resolution.Facts(category=category)
    user_pks = [r.user.pk for r in recipients if r.user is not None]
    if user_pks:
        for user_id, channel, enabled, mode, time, weekday in NotificationPreference.objects.filter(
            user_id__in=user_pks, category=category
        ).values_list("user_id", "channel", "enabled", "mode", "digest_time", "digest_weekday"):
            facts.preferences[(user_id, channel)] = enabled
            facts.modes[(user_id, channel)] = (mode, time, weekday)
        if category.requires_consent:
            for row in (
                Consent.objects.filter(user_id__in=user_pks)
                .filter(Q(category__isnull=True) | Q(category=category))
                .order_by("-created_at", "-id")
                .values_list("user_id", "channel", "category_id", "granted")
            ):
                # django-stubs types a to_field key's ``category_id`` as the target's integer pk
                # in values_list; it is Category.key, a str (or NULL).
                facts.consents.setdefault(row[0], []).append((row[1], row[2] or "", row[3]))  # type: ignore[arg-type]
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
        # By keyed hash: an erased address is suppressed by its hash alone. Written out: the ORM's
        # compiler cost more than the query (the unique (channel, address_hash) index serves it).
        hashed = {(channel, suppression_hash(address)): address for channel, address in addresses}
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT channel, address_hash, reason FROM notifications_suppression "
                "WHERE address_hash = ANY(%s)",
                [sorted({h for _, h in hashed})],
            )
            for channel, address_hash, reason in cursor.fetchall():
                found = hashed.get((channel, address_hash))
                if found is not None:
                    facts.suppressed[(channel, found)] = reason
    return facts


def _scheduled_for(
    request: NotificationRequest, recipient: resolution.Recipient
) -> dt.datetime | None:
    if recipient.scheduled_for is not None:
        return recipient.scheduled_for
    at = request.scheduled_at
    if at is None:
        return None
    if request.scheduled_local:
        tz = (recipient.user.timezone if recipient.user is not None else "") or (
            request.local_timezone
        )
        return resolution.local_to_utc(at.replace(tzinfo=None), tz)
    return at if timezone.is_aware(at) else at.replace(tzinfo=dt.UTC)


def _send(
    *,
    caller: str,
    payload: dict[str, Any],
    idempotency_key: str,
    resent_from: Delivery | None = None,
) -> RequestBody:
    category = category_get(payload.get("category") or "transactional")
    if category is None:
        raise APIError(
            f"No category {payload.get('category')!r}.",
            code="unknown_category",
            fields={"category": ["Unknown category."]},
        )
    recipients = _resolve_recipients(payload["recipients"])
    requested = payload.get("channels") or "auto"
    request = NotificationRequest(
        caller=caller,
        idempotency_key=idempotency_key,
        category=category,
        template_key=payload.get("template") or "",
        content=payload.get("content") or {},
        data=payload.get("data") or {},
        locale=payload.get("locale") or "",
        priority=payload.get("priority") or "normal",
        channels=requested if isinstance(requested, list) else [requested],
        scheduled_at=payload.get("scheduled_at"),
        scheduled_local=bool(payload.get("scheduled_local")),
        resent_from=resent_from,
        escalation=payload.get("escalation") or [],
        cancellation_key=payload.get("cancellation_key") or "",
    )
    written = recipients_write(request, recipients)
    return request_body(request, written.notifications, written.deliveries)


@dataclass
class Written:
    """What :func:`recipients_write` wrote, and the recipients it refused (``strict=False``):
    ``(index in recipients, code, detail)``."""

    notifications: list[Notification]
    deliveries: list[Delivery]
    refused: list[tuple[int, str, str]]


def recipients_write(
    request: NotificationRequest,
    recipients: Sequence[resolution.Recipient],
    *,
    insert_request: bool = True,
    strict: bool = True,
    release: bool = False,
) -> Written:
    """The one writer of notifications and deliveries: single sends, bulk sends and campaigns.

    Loads the rules' facts (preferences, consent, suppression, quiet hours, devices) for
    ``recipients`` in a few queries, decides each (recipient, channel), renders in-app items, and
    writes the request (unless ``insert_request``: a bulk or campaign request written earlier),
    the notifications, deliveries and their events in one statement; deliveries ready to go are
    enqueued once the caller's transaction commits. A recipient whose data fails the template's
    variable schema raises (``strict``) or is left out and reported in ``Written.refused``.
    ``release``: a digest of held items going out (:mod:`notifications.services.digests`),
    never held again itself.
    """
    category = request.category
    facts = _load_facts(category, list(recipients))
    facts.release = release
    channels_asked = request.channels or ["auto"]
    requested: list[str] | str = "auto" if channels_asked == ["auto"] else channels_asked
    family = request.template_key
    content = request.content or {}
    priority = request.priority
    now = timezone.now()

    # An escalation names its channels, each step ``after`` seconds past the send.
    escalation = {step["channel"]: step["after"] for step in request.escalation or []}
    if escalation:
        requested = list(escalation)
    every_channel = sorted(
        {c for r in recipients for c in resolution.channels_for(r, requested, facts)}
    )
    templates = rendering.template_keys(family, every_channel) if family else {}
    if family and not templates and strict:
        raise APIError(
            f"No template {family!r} for {', '.join(every_channel) or 'any channel'}.",
            code="unknown_template",
            fields={"template": ["Unknown template."]},
        )

    variable_schemas = rendering.schemas(templates) if templates else []

    steps = {channel: i for i, channel in enumerate(escalation)}
    notifications: list[Notification] = []
    deliveries: list[Delivery] = []
    realtime_items: list[Notification] = []
    refused: list[tuple[int, str, str]] = []
    for index, recipient in enumerate(recipients):
        data = {**(request.data or {}), **recipient.data} if recipient.data else request.data
        context = rendering.recipient_context(
            data, user=recipient.user, email=recipient.email, phone=recipient.phone
        )
        if variable_schemas:
            try:
                rendering.validate_data(variable_schemas, context)
            except APIError as exc:
                if strict:
                    raise
                refused.append((index, exc.code or "invalid_data", str(exc.detail)))
                continue
        channels = resolution.channels_for(recipient, requested, facts)
        when = _scheduled_for(request, recipient)
        notification = Notification(
            request=request,
            user=recipient.user,
            recipient=recipient.spec,
            email=recipient.email,
            phone=recipient.phone,
            category=category,
            locale=request.locale or (recipient.user.locale if recipient.user else ""),
            data=data,
        )
        decisions = [
            _decide(
                recipient,
                channel,
                facts,
                priority,
                now,
                # A later step goes that long after the send, by the same rules as any
                # scheduled delivery (quiet hours may push it later still).
                (when or now) + dt.timedelta(seconds=escalation[channel])
                if escalation.get(channel)
                else when,
                family,
                templates,
            )
            for channel in channels
        ]
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
                    escalation_step=steps.get(decision.channel),
                    **stamp,
                )
            )
        if inbox is not None and inbox.status == "delivered":
            # Into the inbox with the delivery's own row (one statement); a scheduled one
            # waits for the sweep that delivers it.
            notification.inbox_at = now
            realtime_items.append(notification)

    _insert([request] if insert_request else [], notifications, deliveries, realtime_items)
    return Written(notifications, deliveries, refused)


def _insert(
    requests: list[NotificationRequest],
    notifications: list[Notification],
    deliveries: list[Delivery],
    realtime_items: list[Notification],
) -> None:
    """Writes the rows and their events in one statement; enqueues once the caller commits."""
    event_rows = events.build_many(
        [
            delivery_event(d, d.status, data={"reason": d.reason} if d.reason else {})
            for d in deliveries
        ]
    )
    # One statement is atomic on its own: a transaction only when in-app events join it.
    with transaction.atomic(savepoint=False) if realtime_items else nullcontext():
        rows.insert_all([requests, notifications, deliveries, event_rows])
        notifications_publish_created(realtime_items)
    metrics.deliveries_count((d.channel, "", d.status) for d in deliveries)
    to_enqueue = [(str(d.id), d.priority) for d in deliveries if d.status == "queued"]
    if to_enqueue:
        transaction.on_commit(lambda: _enqueue_committed(to_enqueue))


def _enqueue_committed(to_enqueue: list[tuple[str, str]]) -> None:
    fault_point("send.after_commit")
    enqueue_many(to_enqueue)
    fault_point("send.after_enqueue")


def _decide(
    recipient: resolution.Recipient,
    channel: str,
    facts: resolution.Facts,
    priority: str,
    now: dt.datetime,
    when: dt.datetime | None,
    family: str,
    templates: dict[str, str],
) -> resolution.Decision:
    decision = resolution.decide(
        recipient, channel, facts=facts, priority=priority, now=now, scheduled_for=when
    )
    if family and channel not in templates and decision.status not in ("skipped", "suppressed"):
        return resolution.Decision(
            channel,
            "skipped",
            address=decision.address,
            reason=f"template {family!r} has no {channel} version",
        )
    return decision


def _fill_inbox(
    notification: Notification,
    recipient: resolution.Recipient,
    family: str,
    templates: dict[str, str],
    content: dict[str, Any],
    data: dict[str, Any],
) -> None:
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


def _recipient_view(notification: Notification) -> dict[str, Any]:
    return dict(notification.recipient)


def request_body(
    request: NotificationRequest,
    notifications: Sequence[Notification],
    deliveries: Sequence[Delivery],
) -> RequestBody:
    """The answer to a send, and to a request's status: the request, then each notification
    with its deliveries."""
    by_notification: dict[uuid.UUID, list[DeliveryView]] = {}
    for d in deliveries:
        by_notification.setdefault(d.notification_id, []).append(
            {
                "id": str(d.id),
                "channel": d.channel,
                "status": d.status,
                "reason": d.reason or None,
                "scheduled_for": d.scheduled_for.isoformat() if d.scheduled_for else None,
                "possibly_duplicate": d.possibly_duplicate,
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
