"""Outbound webhooks: the calling services' endpoints, the events emitted to them, and their
signed, retried, ordered delivery (Standard Webhooks: ``Webhook-Id``, ``Webhook-Timestamp``,
``Webhook-Signature``).

Who receives what: an event tied to a send (``delivery.*``, ``notification.read``,
``unsubscribe``) goes only to the endpoints of the service that made the send
(``NotificationRequest.caller``). Events without a caller go to the endpoints whose service held,
when it subscribed, the scope that would let it read that data: ``message.created`` needs
``messaging:read``, ``campaign.completed`` ``campaigns:manage``. Payloads carry ids and states,
never addresses or content.

Emission is one place per change, in the change's own transaction: :func:`emit` (one
``INSERT … SELECT`` that writes nothing when the caller has no endpoint), or, on the send path,
:data:`EMIT_SENT_SQL` folded into the statement that records a provider's acceptance (no
statement of its own). The dispatcher claims due messages with ``FOR UPDATE SKIP LOCKED`` and a
lease; a message whose ordering key has an earlier message still owed waits for it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from communication.audit import audit_record
from communication.exceptions import APIError
from notifications.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from notifications.webhook_transport import (
    Answer,
    UrlNotAllowedError,
    post,
    resolve,
    secret_new,
    sign,
    signing_secrets,
    url_parts,
)

logger = logging.getLogger(__name__)

# Event type -> the scope an endpoint's service must have held to receive it when the event
# has no caller (None: only the caller's own endpoints receive it).
EVENT_TYPES: dict[str, str | None] = {
    "delivery.sent": None,
    "delivery.delivered": None,
    "delivery.failed": None,
    "delivery.bounced": None,
    "notification.read": None,
    "unsubscribe": None,
    "message.created": "messaging:read",
    "campaign.completed": "campaigns:manage",
}

MAX_URL_LENGTH = 2000
MAX_EVENTS = len(EVENT_TYPES)
DISPATCH_BATCH = 50
_TASK = "notifications.tasks.webhooks_dispatch"


def url_validate(url: Any) -> str:
    """``url`` as an endpoint may have it; raises ``APIError`` (400) with the code
    ``webhook_url_invalid`` or ``webhook_url_not_allowed``."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or "\x00" in url:
        raise APIError(
            f"url: an http(s) URL of at most {MAX_URL_LENGTH} characters.",
            code="webhook_url_invalid",
        )
    try:
        _scheme, host, port, _path = url_parts(url)
    except ValueError as exc:  # a port out of range, a bad IPv6 literal
        raise APIError(f"url: {exc}", code="webhook_url_invalid") from exc
    except UrlNotAllowedError as exc:
        raise APIError(f"url: {exc}.", code="webhook_url_invalid") from exc
    try:
        resolve(host, port)
    except UrlNotAllowedError as exc:
        raise APIError(f"url: {exc}.", code="webhook_url_not_allowed") from exc
    return url


def events_validate(events: Any, scopes: Iterable[str]) -> list[str]:
    """The event types an endpoint subscribes to; raises ``APIError`` (400,
    ``webhook_event_unknown`` / ``webhook_events_invalid`` / ``webhook_event_scope``)."""
    if (
        not isinstance(events, list)
        or not events
        or len(events) > MAX_EVENTS
        or not all(isinstance(e, str) for e in events)
    ):
        raise APIError(
            f"events: a list of 1 to {MAX_EVENTS} event types.", code="webhook_events_invalid"
        )
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise APIError(
            f"events: unknown event type {unknown[0][:64]!r}; known: {', '.join(EVENT_TYPES)}.",
            code="webhook_event_unknown",
        )
    held = set(scopes)
    for event in events:
        needed = EVENT_TYPES[event]
        if needed is not None and needed not in held:
            raise APIError(f"events: {event} needs the scope {needed}.", code="webhook_event_scope")
    return sorted(set(events))


# --------------------------------------------------------------------------- endpoints


@transaction.atomic
def endpoint_create(
    *, owner: str, scopes: Iterable[str], url: Any, events: Any, description: str = ""
) -> tuple[WebhookEndpoint, str]:
    """Registers an endpoint of ``owner``; returns it and its secret (shown this once)."""
    scopes = sorted(scopes)
    endpoint = WebhookEndpoint.objects.create(
        owner=owner,
        scopes=scopes,
        url=url_validate(url),
        events=events_validate(events, scopes),
        description=_description(description),
        secret=secret_new(),
    )
    audit_record(
        "webhook_endpoint.create",
        "notifications.webhookendpoint",
        endpoint.pk,
        changes={"owner": owner, "url": endpoint.url, "events": endpoint.events},
    )
    return endpoint, endpoint.secret


def _description(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 500 or "\x00" in value:
        raise APIError("description: text of at most 500 characters.", code="invalid")
    return value


@transaction.atomic
def endpoint_update(
    endpoint: WebhookEndpoint,
    *,
    url: Any = None,
    events: Any = None,
    description: Any = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    """Changes an endpoint (re-enabling one resets its failure count)."""
    changes: dict[str, Any] = {}
    if url is not None and url != endpoint.url:
        changes["url"] = [endpoint.url, url_validate(url)]
        endpoint.url = url
    if events is not None:
        new = events_validate(events, endpoint.scopes)
        if new != endpoint.events:
            changes["events"] = [endpoint.events, new]
            endpoint.events = new
    if description is not None and description != endpoint.description:
        endpoint.description = _description(description)
        changes["description"] = "changed"
    if enabled is not None and enabled != endpoint.enabled:
        changes["enabled"] = [endpoint.enabled, enabled]
        if enabled:
            endpoint.disabled_at, endpoint.disabled_reason = None, ""
            endpoint.consecutive_failures = 0
        else:
            endpoint.disabled_at, endpoint.disabled_reason = timezone.now(), "disabled by owner"
    if changes:
        endpoint.save()
        audit_record(
            "webhook_endpoint.update",
            "notifications.webhookendpoint",
            endpoint.pk,
            changes=changes,
        )
        if enabled:
            _dispatch_on_commit()
    return endpoint


@transaction.atomic
def endpoint_delete(endpoint: WebhookEndpoint) -> None:
    """Deletes an endpoint and its delivery log."""
    audit_record(
        "webhook_endpoint.delete",
        "notifications.webhookendpoint",
        endpoint.pk,
        changes={"owner": endpoint.owner, "url": endpoint.url},
    )
    endpoint.delete()


@transaction.atomic
def endpoint_rotate_secret(endpoint: WebhookEndpoint) -> str:
    """A new secret; the current one keeps signing (beside the new one) for
    ``WEBHOOKS_SECRET_OVERLAP_SECONDS``. Returns the new secret (shown this once)."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = timezone.now() + dt.timedelta(
        seconds=settings.WEBHOOKS_SECRET_OVERLAP_SECONDS
    )
    endpoint.secret = secret_new()
    endpoint.save(
        update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"]
    )
    audit_record(
        "webhook_endpoint.rotate_secret",
        "notifications.webhookendpoint",
        endpoint.pk,
        changes={"previous_secret_expires_at": endpoint.previous_secret_expires_at.isoformat()},
    )
    return str(endpoint.secret)


# --------------------------------------------------------------------------- emission


@dataclass(frozen=True)
class Event:
    """One event to emit: ``caller`` the service whose send it is about (None: the endpoints
    holding the type's scope), ``ordering_key`` what must stay in order (a delivery, a
    conversation; empty: no order)."""

    type: str
    data: dict[str, Any]
    caller: str | None = None
    ordering_key: str = ""
    # Instead of ``caller``: the notification whose request's caller receives the event,
    # resolved inside the statement (no query of its own).
    notification_id: Any = None


_EMIT = """
    WITH v AS (
        SELECT v.type, v.payload, v.scope, v.ordering_key, COALESCE(v.caller, r.caller) AS caller
        FROM unnest(%s::text[], %s::jsonb[], %s::text[], %s::text[], %s::text[], %s::uuid[])
            AS v(type, payload, caller, scope, ordering_key, notification_id)
        LEFT JOIN notifications_notification n ON n.id = v.notification_id
        LEFT JOIN notifications_notificationrequest r ON r.id = n.request_id
    ), written AS (
        INSERT INTO notifications_webhookmessage
            (event_id, endpoint_id, event_type, payload, ordering_key, status, attempts,
             next_attempt_at, created_at)
        SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, v.type,
               v.payload, v.ordering_key, 'pending', 0, now(), now()
        FROM v JOIN notifications_webhookendpoint e
          ON e.disabled_at IS NULL AND v.type = ANY(e.events)
         AND (e.owner = v.caller OR (v.scope IS NOT NULL AND v.scope = ANY(e.scopes)))
        RETURNING 1
    )
    SELECT count(*) FROM written
"""


def emit(events: Sequence[Event]) -> int:
    """Writes a message per (event, endpoint that receives it) in one statement, in the
    caller's transaction, and asks for a dispatch after commit when any was written. Returns
    how many. The statement joins the enabled endpoints (the partial index on ``owner``), so a
    caller with none pays for one indexed look-up and writes nothing."""
    if not events:
        return 0
    created = timezone.now().isoformat()
    with connection.cursor() as cursor:
        cursor.execute(
            _EMIT,
            [
                [e.type for e in events],
                [_payload(e.type, e.data, created) for e in events],
                [e.caller for e in events],
                [EVENT_TYPES[e.type] for e in events],
                [e.ordering_key[:255] for e in events],
                [e.notification_id for e in events],
            ],
        )
        written = int(cursor.fetchone()[0])
    if written:
        _dispatch_on_commit()
    return written


def _payload(type_: str, data: dict[str, Any], created: str) -> str:
    return json.dumps({"type": type_, "created_at": created, "data": data}, cls=DjangoJSONEncoder)


# The send path's acceptance statement (``outcomes.deliveries_record_sent``) writes its
# ``delivery.sent`` / ``delivery.delivered`` messages itself: this CTE, after its ``recorded``
# CTE (``RETURNING d.id, d.status, d.channel, d.notification_id``), with two parameters — the
# deliveries' ids and their callers. No statement of its own, and nothing written for a caller
# without endpoints; the statement's result says how many were written (``hooks``).
EMIT_SENT_SQL = """
    hooks AS (
        INSERT INTO notifications_webhookmessage
            (event_id, endpoint_id, event_type, payload, ordering_key, status, attempts,
             next_attempt_at, created_at)
        SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, t.type,
               jsonb_build_object(
                   'type', t.type,
                   'created_at', to_char(now() AT TIME ZONE 'UTC',
                                         'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
                   'data', jsonb_build_object(
                       'delivery_id', r.id, 'notification_id', r.notification_id,
                       'channel', r.channel, 'status', t.status)),
               'delivery:' || r.id, 'pending', 0, now(), now()
        FROM recorded r
        JOIN unnest(%s::uuid[], %s::text[]) AS c(id, caller) ON c.id = r.id
        CROSS JOIN LATERAL (VALUES ('delivery.sent', 'sent', 0),
                                   ('delivery.delivered', 'delivered', 1)) AS t(type, status, n)
        JOIN notifications_webhookendpoint e
          ON e.owner = c.caller AND e.disabled_at IS NULL AND t.type = ANY(e.events)
        WHERE t.n = 0 OR r.status = 'delivered'
        ORDER BY r.id, t.n
        RETURNING 1
    )
"""


# ``message.created``, written by messaging's send statement (``messaging.services.statement``)
# after its ``message`` CTE, with its parameters: for the endpoints whose service holds
# ``messaging:read``, in order per conversation. No content, no sender: ids and the type.
EMIT_MESSAGE_SQL = """
    webhooks AS (
        INSERT INTO notifications_webhookmessage
            (event_id, endpoint_id, event_type, payload, ordering_key, status, attempts,
             next_attempt_at, created_at)
        SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, 'message.created',
               jsonb_build_object(
                   'type', 'message.created', 'created_at', %(sent_at)s::timestamptz,
                   'data', jsonb_build_object(
                       'message_id', message.id, 'parent_id', message.parent_id,
                       'conversation_id', %(conversation)s::uuid, 'type', %(type)s::text)),
               'conversation:' || %(conversation)s::text, 'pending', 0, now(), now()
        FROM message JOIN notifications_webhookendpoint e
          ON e.disabled_at IS NULL AND 'message.created' = ANY(e.events)
         AND 'messaging:read' = ANY(e.scopes)
        RETURNING 1
    )
"""


def delivery_event(delivery: Any, type_: str, status: str = "", **extra: Any) -> Event:
    """The ``delivery.*`` event of ``delivery`` (its notification and request loaded), for
    its caller's endpoints, in order per delivery; ``status`` the one it moved to."""
    request = delivery.notification.request
    return Event(
        type=type_,
        caller=request.caller,
        ordering_key=f"delivery:{delivery.id}",
        data={
            "delivery_id": str(delivery.id),
            "notification_id": str(delivery.notification_id),
            "channel": delivery.channel,
            "status": status or delivery.status,
            **extra,
        },
    )


def tracked_events(delivery: Any, provider_event: str, *, changed: bool) -> list[Event]:
    """The events of a provider's report on ``delivery`` (``delivery_track``): the state it
    moved to (``sent``, ``delivered``, ``failed``) when it moved, ``delivery.bounced`` for
    every bounce (soft ones included; a hard one also moves it to failed), ``unsubscribe``
    for a provider's opt-out."""
    found = []
    if changed and delivery.status in ("sent", "delivered", "failed"):
        found.append(delivery_event(delivery, f"delivery.{delivery.status}"))
    if provider_event == "bounced":
        found.append(delivery_event(delivery, "delivery.bounced"))
    if provider_event == "unsubscribed":
        found.append(unsubscribe_event(delivery, "provider"))
    return found


def unsubscribe_event(delivery: Any, source: str) -> Event:
    """An unsubscribe from ``delivery``'s link (or its provider), for the caller that sent it:
    ids, category and channel only, never the address."""
    notification = delivery.notification
    return Event(
        type="unsubscribe",
        caller=notification.request.caller,
        data={
            "delivery_id": str(delivery.id),
            "notification_id": str(delivery.notification_id),
            "category": notification.category_id,
            "channel": delivery.channel,
            "source": source,
        },
    )


def read_event(notification_id: Any, read_at: dt.datetime | None) -> Event:
    """``notification.read`` for the caller whose send made the notification (resolved in the
    emitting statement)."""
    return Event(
        type="notification.read",
        notification_id=notification_id,
        ordering_key=f"notification:{notification_id}",
        data={"notification_id": str(notification_id), "read_at": read_at},
    )


def campaign_completed_event(campaign: Any) -> Event:
    """``campaign.completed``, for the services holding ``campaigns:manage`` (which reads every
    campaign through the API)."""
    return Event(
        type="campaign.completed",
        data={
            "campaign_id": str(campaign.pk),
            "status": campaign.status,
            "completed_at": campaign.completed_at,
        },
    )


def dispatch_after_emit(written: int) -> None:
    """For a statement that wrote messages itself (``EMIT_SENT_SQL``): the dispatch after
    commit, when it wrote any."""
    if written:
        _dispatch_on_commit()


def _dispatch_on_commit(countdown: float = 0) -> None:
    transaction.on_commit(lambda: dispatch_enqueue(countdown))


def dispatch_enqueue(countdown: float = 0) -> None:
    """Asks a worker for a dispatch now (or in ``countdown`` seconds)."""
    from communication.celery import app, queue  # noqa: PLC0415 (the app imports the tasks)

    try:
        app.send_task(_TASK, queue=queue("default"), countdown=countdown or None)
    except Exception:  # the broker is down: the sweep dispatches what is due
        logger.warning("webhook dispatch not enqueued; the sweep will", exc_info=True)


# --------------------------------------------------------------------------- dispatch

_CLAIM = """
    UPDATE notifications_webhookmessage AS m
    SET status = 'delivering', lease_until = %(now)s + make_interval(secs => %(lease)s),
        attempts = m.attempts + 1
    WHERE m.id IN (
        SELECT w.id FROM notifications_webhookmessage w
        JOIN notifications_webhookendpoint e ON e.id = w.endpoint_id
        WHERE w.status = 'pending' AND w.next_attempt_at <= %(now)s AND e.disabled_at IS NULL
          AND (w.ordering_key = '' OR NOT EXISTS (
                SELECT 1 FROM notifications_webhookmessage p
                WHERE p.endpoint_id = w.endpoint_id AND p.ordering_key = w.ordering_key
                  AND p.status IN ('pending', 'delivering') AND p.ordering_key <> ''
                  AND p.id < w.id))
        ORDER BY w.next_attempt_at, w.id
        LIMIT %(limit)s
        FOR UPDATE OF w SKIP LOCKED
    )
    RETURNING m.id
"""


def messages_dispatch(limit: int = 500) -> dict[str, int]:
    """Claims due messages (batches, until none is due or ``limit`` is reached), POSTs each
    and records the outcome. Safe to run in several workers at once."""
    counts = {"delivered": 0, "retry": 0, "dead": 0}
    done = 0
    while done < limit:
        with transaction.atomic(), connection.cursor() as cursor:
            # The application's clock, as the retries' times are written (and not the
            # transaction's start, which ``now()`` would be).
            cursor.execute(
                _CLAIM,
                {
                    "now": timezone.now(),
                    "lease": settings.WEBHOOKS_LEASE_SECONDS,
                    "limit": DISPATCH_BATCH,
                },
            )
            ids = [row[0] for row in cursor.fetchall()]
        if not ids:
            break
        claimed = WebhookMessage.objects.filter(id__in=ids).select_related("endpoint")
        for message in sorted(claimed, key=lambda m: m.id):
            counts[message_deliver(message)] += 1
        done += len(ids)
    return counts


def message_deliver(message: WebhookMessage) -> str:
    """One attempt of a claimed message: sign, POST, record. Returns ``delivered``, ``retry``
    or ``dead``."""
    endpoint = message.endpoint
    now = timezone.now()
    body = json.dumps(message.payload, separators=(",", ":")).encode()
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "communication-webhooks/1",
        "Webhook-Id": message.event_id,
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": " ".join(
            sign(s, message.event_id, timestamp, body) for s in signing_secrets(endpoint, now)
        ),
    }
    answer = post(endpoint.url, headers, body)
    ok = answer.status is not None and 200 <= answer.status < 300
    schedule = settings.WEBHOOKS_RETRY_SCHEDULE
    if ok:
        outcome, fields = "delivered", {"status": "delivered", "next_attempt_at": now}
    elif message.attempts > len(schedule):
        outcome, fields = "dead", {"status": "dead", "next_attempt_at": now}
    else:
        delay = schedule[message.attempts - 1] * (0.8 + 0.4 * random.random())
        outcome = "retry"
        fields = {"status": "pending", "next_attempt_at": now + dt.timedelta(seconds=delay)}
    with transaction.atomic():
        WebhookAttempt.objects.create(
            message=message,
            at=now,
            status_code=answer.status,
            latency_ms=answer.latency_ms,
            error=answer.error,
        )
        held = WebhookMessage.objects.filter(
            id=message.id, status="delivering", attempts=message.attempts
        ).update(lease_until=None, last_status_code=answer.status, **fields)
        if held:
            _endpoint_outcome(endpoint, ok, answer)
    # An ordered successor, now due, is claimed by the dispatcher's next round; a retry soon
    # is enqueued with its countdown, a later one is left to the sweep (no far broker ETAs).
    if held and outcome == "retry" and delay <= 3600:
        dispatch_enqueue(delay)
    return outcome


def _endpoint_outcome(endpoint: WebhookEndpoint, ok: bool, answer: Answer) -> None:
    """Resets the endpoint's failure count, or counts one more and disables it past
    ``WEBHOOKS_DISABLE_AFTER_FAILURES`` (with a log warning and an audit entry)."""
    if ok:
        if endpoint.consecutive_failures:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=0)
        return
    threshold = settings.WEBHOOKS_DISABLE_AFTER_FAILURES
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        consecutive_failures=F("consecutive_failures") + 1
    )
    reason = (
        f"disabled after {threshold} consecutive failed attempts "
        f"(last: {answer.status or answer.error[:120]})"
    )
    disabled = WebhookEndpoint.objects.filter(
        pk=endpoint.pk, disabled_at=None, consecutive_failures__gte=threshold
    ).update(disabled_at=timezone.now(), disabled_reason=reason[:255])
    if disabled:
        logger.warning(
            "webhook endpoint disabled",
            extra={"endpoint": str(endpoint.pk), "owner": endpoint.owner, "reason": reason},
        )
        audit_record(
            "webhook_endpoint.disable",
            "notifications.webhookendpoint",
            endpoint.pk,
            changes={"reason": reason},
            actor="system:webhooks",
        )


def webhooks_sweep() -> dict[str, int]:
    """Beat's sweep: messages whose lease expired (a worker died mid-POST) become due again,
    and a dispatch is enqueued when anything is due."""
    now = timezone.now()
    expired = WebhookMessage.objects.filter(status="delivering", lease_until__lt=now).update(
        status="pending", lease_until=None, next_attempt_at=now
    )
    due = WebhookMessage.objects.filter(
        status="pending", next_attempt_at__lte=now, endpoint__disabled_at=None
    ).exists()
    if due:
        dispatch_enqueue()
    return {"expired": expired, "due": int(due)}


def webhooks_prune(batch: int = 5000) -> int:
    """Forgets delivered and dead messages (their attempts with them) older than
    ``WEBHOOKS_LOG_RETENTION_DAYS``, a batch at a time. Returns how many."""
    cutoff = timezone.now() - dt.timedelta(days=settings.WEBHOOKS_LOG_RETENTION_DAYS)
    removed = 0
    while True:
        ids = list(
            WebhookMessage.objects.filter(
                created_at__lt=cutoff, status__in=("delivered", "dead")
            ).values_list("id", flat=True)[:batch]
        )
        if not ids:
            return removed
        removed += (
            WebhookMessage.objects.filter(id__in=ids).delete()[1].get(WebhookMessage._meta.label, 0)
        )


# --------------------------------------------------------------------------- replay


@transaction.atomic
def message_replay(endpoint: WebhookEndpoint, event_id: str) -> WebhookMessage:
    """Sends a message of ``endpoint`` again (same ``Webhook-Id``), with a fresh schedule.
    Raises ``WebhookMessage.DoesNotExist`` for another endpoint's message."""
    message = WebhookMessage.objects.select_for_update().get(endpoint=endpoint, event_id=event_id)
    _replay([message.pk], endpoint, {"event_id": event_id})
    message.refresh_from_db()
    return message


@transaction.atomic
def messages_replay_since(endpoint: WebhookEndpoint, since: dt.datetime) -> int:
    """Sends again every message of ``endpoint`` created since ``since`` (not one on its way
    now). Returns how many."""
    ids = list(
        WebhookMessage.objects.filter(endpoint=endpoint, created_at__gte=since)
        .exclude(status="delivering")
        .values_list("id", flat=True)[:10_000]
    )
    _replay(ids, endpoint, {"since": since.isoformat(), "count": len(ids)})
    return len(ids)


def _replay(ids: list[int], endpoint: WebhookEndpoint, changes: dict[str, Any]) -> None:
    WebhookMessage.objects.filter(id__in=ids).exclude(status="delivering").update(
        status="pending", attempts=0, next_attempt_at=timezone.now(), lease_until=None
    )
    audit_record(
        "webhook_endpoint.replay", "notifications.webhookendpoint", endpoint.pk, changes=changes
    )
    if ids:
        _dispatch_on_commit()


def endpoint_get(owner: str, endpoint_id: Any) -> WebhookEndpoint:
    """``owner``'s endpoint; another's, or none, is ``WebhookEndpoint.DoesNotExist``."""
    try:
        pk = uuid.UUID(str(endpoint_id))
    except ValueError:
        raise WebhookEndpoint.DoesNotExist from None
    return WebhookEndpoint.objects.get(pk=pk, owner=owner)
