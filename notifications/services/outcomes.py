"""What a delivery attempt ends in, written only while the worker still holds the delivery
(status ``sending`` and its attempt number): accepted by the provider, requeued (retry, failover,
delayed) or failed, each with its analytics events."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from analytics import events, pricing
from communication import rows
from notifications import metrics
from notifications.enqueue import enqueue_many
from notifications.models import Delivery, Suppression
from notifications.providers.base import ProviderError, SendResult
from notifications.providers.registry import provider_breaker
from notifications.services import webhooks
from notifications.services.caps import cap_slot_release
from notifications.services.delivery_events import delivery_event
from notifications.services.tracking import suppression_add


class Acceptance(NamedTuple):
    """A provider's acceptance of a delivery, waiting to be recorded."""

    delivery: Delivery
    alias: str
    provider_index: int  # not ``index``: that would shadow ``tuple.index``
    result: SendResult
    latency_ms: float
    at: dt.datetime
    event_data: dict[str, Any]


def deliveries_record_sent(
    accepted: Sequence[Acceptance], *, calling: Sequence[uuid.UUID] = ()
) -> None:
    """Records providers' acceptances, of every channel, in one statement: an UPDATE of the
    deliveries this worker still holds, and the events (``sent``, and ``delivered`` when the
    provider says so) of those it updated. A single acceptance is a batch of one.

    ``calling``: deliveries about to reach their provider, marked (``provider_call_at``) by the
    same statement (see ``delivery._Batch``).

    The statement commits without waiting for its WAL flush unless
    ``DELIVERY_RECORD_SYNCHRONOUS_COMMIT``: a worker that dies loses nothing committed so (the
    server has it), only a crash of PostgreSQL itself can lose its last fraction of a second,
    whose deliveries are then sent again unflagged. Waiting for the disk on every provider call
    would halve a worker's rate on an ordinary disk."""
    if not accepted:
        if calling:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"{_MARK_CALLING} SELECT 1", [_durability(), timezone.now(), list(calling)]
                )
        return
    values = [
        (
            a.delivery.id,
            a.delivery.attempts,
            "delivered" if a.result.status == "delivered" else "sent",
            a.alias,
            a.provider_index,
            a.result.provider_message_id[:255],
            a.at,
            a.delivery.template_version,
            a.delivery.variant,
        )
        for a in accepted
    ]
    # Each column through its field's conversion, as the ORM would write it.
    columns = [
        rows.column(Delivery, name, column)
        for name, column in zip(_SENT_FIELDS, zip(*values, strict=True), strict=True)
    ]
    sent_events = [event for a in accepted for event in _sent_events(a)]
    insert_events, event_rows = rows.insert_statement(
        events.build_many(sent_events),
        where="r.delivery_id IN (SELECT id FROM recorded)",
    )
    # The caller's webhook messages (delivery.sent / .delivered) are written by the same
    # statement: nothing more for a caller without endpoints (webhooks.EMIT_SENT_SQL).
    with connection.cursor() as cursor:
        cursor.execute(
            f"{_MARK_CALLING}, recorded AS ({_UPDATE_SENT}), {webhooks.EMIT_SENT_SQL}"  # noqa: S608 - constant SQL; values are parameters
            f" {insert_events} RETURNING (SELECT count(*) FROM hooks)",
            [
                _durability(),
                timezone.now(),
                list(calling),
                _NO_ERROR.encrypted(""),
                timezone.now(),
                *(list(c) for c in columns),
                [a.delivery.id for a in accepted],
                [a.delivery.notification.request.caller for a in accepted],
                event_rows,
            ],
        )
        hooked = cursor.fetchone()
    webhooks.dispatch_after_emit(hooked[0] if hooked else 0)
    # Counted as the provider answered (a delivery whose lease another worker took meanwhile,
    # which the statement leaves alone, still made its call).
    for a in accepted:
        metrics.provider_call(a.delivery.channel, a.alias, a.latency_ms, accepted=True)
    metrics.deliveries_count((e["channel"], e["provider"], e["type"]) for e in sent_events)
    metrics.deliveries_count_possibly_duplicate(
        (a.delivery.channel, a.alias) for a in accepted if a.delivery.possibly_duplicate
    )


# ``error`` is encrypted: its blank is the field's own ciphertext of "".
_NO_ERROR = Delivery._meta.get_field("error")

_SENT_FIELDS = (
    "id",
    "attempts",
    "status",
    "provider",
    "provider_index",
    "provider_message_id",
    "sent_at",
    "template_version",
    "variant",
)
# A statement of its own, or the first part of the acceptances' (``WITH marked AS …``): a
# data-modifying WITH runs whether or not the rest reads it. ``durability`` sets the statement's
# own ``synchronous_commit`` (DELIVERY_RECORD_SYNCHRONOUS_COMMIT): the UPDATE's one-time filter
# reads it, so it runs even when there is nothing to mark.
_MARK_CALLING = """
    WITH durability AS (SELECT set_config('synchronous_commit', %s, true) AS level),
    marked AS (
        UPDATE notifications_delivery SET provider_call_at = %s
        WHERE id = ANY(%s::uuid[]) AND status = 'sending'
          AND (SELECT level FROM durability) IS NOT NULL
        RETURNING id
    )
"""


def _durability() -> str:
    return "on" if settings.DELIVERY_RECORD_SYNCHRONOUS_COMMIT else "off"


_UPDATE_SENT = """
    UPDATE notifications_delivery AS d
    SET status = v.status, provider = v.provider, provider_index = v.provider_index,
        provider_message_id = v.message_id, sent_at = v.at,
        delivered_at = CASE WHEN v.status = 'delivered' THEN v.at END, error = %s,
        template_version = v.template_version, variant = v.variant,
        updated_at = %s, lease_until = NULL
    FROM unnest(%s::uuid[], %s::int[], %s::text[], %s::text[], %s::int[], %s::text[],
                %s::timestamptz[], %s::uuid[], %s::text[])
         AS v(id, attempts, status, provider, provider_index, message_id, at,
              template_version, variant)
    WHERE d.id = v.id AND d.status = 'sending' AND d.attempts = v.attempts
    RETURNING d.id, d.status, d.channel, d.notification_id
"""


def _sent_events(a: Acceptance) -> list[dict[str, Any]]:
    delivery = a.delivery
    request = delivery.notification.request
    # The provider call started latency_ms before its answer (``at``).
    started = a.at - dt.timedelta(milliseconds=a.latency_ms)
    queued = delivery.queued_at or delivery.created_at
    # A scheduled delivery (a time asked for, or quiet hours) counts from its time, not from
    # the API call days before: the latency is the service's, not the wait that was asked for.
    origin = request.created_at
    if delivery.scheduled_for is not None and delivery.scheduled_for > origin:
        origin = delivery.scheduled_for
    sent = [
        delivery_event(
            delivery,
            "sent",
            provider=a.alias,
            latency_ms=round(a.latency_ms, 2),
            cost=pricing.price(
                a.alias,
                delivery.channel,
                address=delivery.address,
                segments=a.event_data.get("segments", 1),
            ),
            queue_wait_ms=_ms(started - queued),
            api_to_provider_ms=_ms(a.at - origin),
            attempts=delivery.attempts,
            # Sent again after a worker died in its provider call (``services.sweeps``).
            data={"possibly_duplicate": True} if delivery.possibly_duplicate else None,
            **a.event_data,
        )
    ]
    if a.result.status == "delivered":
        sent.append(delivery_event(delivery, "delivered", provider=a.alias))
    return sent


def _ms(delta: dt.timedelta) -> float:
    # Clocks of different hosts (the API's, the worker's) can disagree by a little.
    return max(round(delta.total_seconds() * 1000, 2), 0.0)


def delivery_requeue(delivery: Delivery, delay: float, outcome: str, **fields: Any) -> str:
    """Puts the delivery back in the queue ``delay`` seconds from now (if this worker still holds
    it), with ``fields`` changed; returns ``outcome``."""
    at = timezone.now() + dt.timedelta(seconds=delay)
    if _finish(delivery, status="queued", next_attempt_at=at, **fields):
        enqueue_many([(str(delivery.id), delivery.priority)], countdown=delay)
    return outcome


def delivery_fail(
    delivery: Delivery,
    reason: str,
    *,
    error: str,
    provider: str = "",
    provider_index: int | None = None,
    latency_ms: float | None = None,
    **event_data: Any,
) -> bool:
    """Marks the delivery failed (if this worker still holds it) and records why; returns
    whether it did."""
    fields: dict[str, Any] = {
        "status": "failed",
        "failed_at": timezone.now(),
        "error": error[:2000],
    }
    if provider:
        fields["provider"] = provider
    if provider_index is not None:
        fields["provider_index"] = provider_index
    with transaction.atomic():
        if not _finish(delivery, **fields):
            return False
        # Nothing reached the person: the delivery's place in its frequency cap is free again.
        cap_slot_release(delivery)
        _record(
            delivery,
            "failed",
            provider=provider,
            latency_ms=latency_ms,
            reason=reason,
            **event_data,
        )
        webhooks.emit(
            [webhooks.delivery_event(delivery, "delivery.failed", "failed", reason=reason)]
        )
    metrics.deliveries_count([(delivery.channel, provider, "failed")])
    return True


class Blamed(Protocol):
    """What a failure is recorded against: a provider, or ``push.PushSender`` for push."""

    @property
    def alias(self) -> str: ...


def delivery_provider_error(
    delivery: Delivery,
    provider: Blamed,
    index: int,
    exc: ProviderError,
    latency: float,
    chain: Sequence[Blamed],
) -> str:
    """Records a provider's refusal of ``delivery`` and decides what comes next: ``failed``
    (permanent, with its suppression), ``ambiguous`` (not resent where settings say so),
    ``retry`` on the same provider with backoff, or ``failover`` to the next of ``chain``.
    ``provider`` is what to blame (anything with an ``alias``)."""
    metrics.provider_call(delivery.channel, provider.alias, latency, accepted=False)
    now = timezone.now()
    error = f"{provider.alias}: {exc}"[:2000]
    if exc.permanent:
        with transaction.atomic():
            if (
                delivery_fail(
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
                metrics.deliveries_count([(delivery.channel, provider.alias, "ambiguous")])
        return "ambiguous"

    delivery.provider_attempts += 1
    first_failure = delivery.first_failure_at or now
    urgent = delivery.priority in ("high", "urgent")
    # The last retry of an urgent delivery must still land within the failover promise.
    cut_off = settings.DELIVERY_URGENT_FAILOVER_SECONDS - settings.DELIVERY_URGENT_RETRY_MAX_SECONDS
    exhausted = delivery.provider_attempts >= settings.DELIVERY_MAX_ATTEMPTS_PER_PROVIDER or (
        urgent and (now - first_failure).total_seconds() >= cut_off
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
            delivery_fail(
                delivery,
                "providers_exhausted",
                error=error,
                provider=provider.alias,
                provider_index=index,
            )
            return "failed"
        delivery_requeue(
            delivery,
            0,
            "failover",
            provider_index=index + 1,
            provider_attempts=0,
            first_failure_at=first_failure,
            error=error,
        )
        return "failover"
    delivery_requeue(
        delivery,
        _retry_delay(delivery, exc),
        "retry",
        provider_index=index,
        provider_attempts=delivery.provider_attempts,
        first_failure_at=first_failure,
        error=error,
    )
    return "retry"


def _finish(delivery: Delivery, **fields: Any) -> bool:
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
    base: float = settings.DELIVERY_RETRY_BASE_SECONDS * 2 ** max(delivery.provider_attempts - 1, 0)
    delay = base * (0.5 + random.random())  # full jitter around the exponential step
    if delivery.priority in ("high", "urgent"):
        # With the failover cut-off, bounds how long an urgent delivery stays on a failing
        # provider (DELIVERY_URGENT_FAILOVER_SECONDS).
        delay = min(delay, settings.DELIVERY_URGENT_RETRY_MAX_SECONDS)
    if error is not None and error.retry_after:
        delay = max(delay, error.retry_after)
    return min(delay, 3600.0)


def _record(
    delivery: Delivery,
    type_: str,
    *,
    provider: str = "",
    latency_ms: float | None = None,
    **data: Any,
) -> None:
    events.record(
        **delivery_event(delivery, type_, provider=provider, latency_ms=latency_ms, **data)
    )
