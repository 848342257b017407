"""Delivering: claim a batch of deliveries, render each, call its provider (or the push fan-out)
and hand the answer to ``outcomes``. See "The delivery pipeline" in DESIGN.md, steps 3 and 4."""

from __future__ import annotations

import datetime as dt
import functools
import html as html_module
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from markupsafe import escape

from analytics import events
from communication import rows
from communication.audit import audit_record
from communication.circuit import CircuitOpenError
from communication.exceptions import APIError
from communication.faults import fault_point
from communication.models import Category, User
from notifications import push, rendering, unsubscribe
from notifications.enqueue import enqueue_many
from notifications.models import Delivery, Notification, NotificationRequest
from notifications.providers import ratelimit, registry
from notifications.providers.base import Message, Provider, ProviderError, SendResult
from notifications.providers.registry import provider_breaker
from notifications.services.caps import deliveries_within_caps
from notifications.services.delivery_events import delivery_event
from notifications.services.outcomes import (
    Acceptance,
    deliveries_record_sent,
    delivery_fail,
    delivery_provider_error,
    delivery_requeue,
)
from templates_app import sms
from templates_app.errors import RenderBusyError, RenderLimitError


def deliveries_claim(delivery_ids: Iterable[uuid.UUID | str]) -> list[Delivery]:
    """Takes the due, queued deliveries among ``delivery_ids`` (but those of a held request: a
    paused campaign's) for this worker, in one
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
        cursor.execute(
            _claim_statement(),
            [
                rows.column(Delivery, "id", ids),
                *(
                    rows.column(Delivery, name, [value])[0]
                    for name, value in (
                        ("next_attempt_at", now),
                        ("sending_at", now),
                        ("updated_at", now),
                        ("lease_until", lease),
                    )
                ),
            ],
        )
        found = cursor.fetchall()
    claimed = []
    widths = [len(m._meta.concrete_fields) for m in _CLAIMED]
    for row in found:
        parts, start = [], 0
        for width in widths:
            parts.append(row[start : start + width])
            start += width
        delivery = rows.instance(Delivery, parts[0])
        notification = rows.instance(Notification, parts[1])
        request = rows.instance(NotificationRequest, parts[2])
        category = rows.instance(Category, parts[3])
        user = rows.instance(User, parts[4]) if parts[4][0] is not None else None  # all NULL
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
            SELECT d.id FROM notifications_delivery AS d
            WHERE d.id = ANY(%s) AND d.status = 'queued'
              AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= %s)
              AND NOT EXISTS (
                SELECT 1 FROM notifications_notification AS hn
                JOIN notifications_notificationrequest AS hr ON hr.id = hn.request_id
                WHERE hn.id = d.notification_id AND (hr.held_at IS NOT NULL
                  -- an escalation step of a notification read meanwhile is not sent
                  OR (d.escalation_step > 0 AND hn.read_at IS NOT NULL))
              )
            ORDER BY d.id FOR UPDATE OF d SKIP LOCKED
        ), claimed AS (
            UPDATE notifications_delivery AS d
            SET status = 'sending', attempts = d.attempts + 1, sending_at = %s, updated_at = %s,
                lease_until = %s, provider_call_at = NULL
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


def _message_for(delivery: Delivery, batch: _Batch) -> Message:
    notification = delivery.notification
    request = notification.request
    user = notification.user
    family = request.template_key
    template_key = ""
    if family:
        template_key = batch.template_key(family, delivery.channel)
        if not template_key:
            raise ProviderError(f"template {family!r} has no {delivery.channel} version")
    context = rendering.recipient_context(
        notification.data, user=user, email=notification.email, phone=notification.phone
    )
    rendered = rendering.render(
        channel=delivery.channel,
        template_key=template_key,
        content=request.content,
        data=context,
        locale=notification.locale,
        timezone=user.timezone if user else "",
        recipient=user.external_id if user else None,
    )
    delivery.template_version = rendered.get("version")
    delivery.variant = rendered.get("variant") or ""
    headers = {}
    html = rendered.get("html", "")
    if delivery.channel == "email":
        headers = unsubscribe.headers_for(delivery)
        if html and notification.category is not None and notification.category.tracking_allowed:
            html = rendering.track_links(html, delivery_id=delivery.id)
    text = rendered.get("text") or rendered.get("body", "")
    variables = _variables(context, text, html) if _batchable(delivery) else []
    return Message(
        channel=delivery.channel,
        to=delivery.address,
        subject=rendered.get("subject", ""),
        text=text,
        html=html,
        title=rendered.get("title", ""),
        data=rendered.get("data") or {},
        headers=headers,
        image=rendered.get("image") or "",
        link=rendered.get("deep_link") or rendered.get("action_url") or "",
        from_email=settings.DEFAULT_FROM_EMAIL,
        delivery_id=str(delivery.id),
        category=notification.category_id,
        tags=[notification.category_id],
        variables=variables,
    )


def _variables(context: dict[str, Any], text: str, html: str) -> list[str]:
    """What may differ between two recipients' renders of one template (``Message.variables``):
    the context's values, as text and HTML-escaped, and the delivery's own URLs."""
    found: set[str] = set()
    stack: list[Any] = [context]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif value is not None and value != "":
            # As Jinja escapes it, and as lxml writes it back after tracking the links.
            found.update(
                (str(value), str(escape(str(value))), html_module.escape(str(value), False))
            )
    found.update(_own_urls().findall(text))
    found.update(_own_urls().findall(html))
    return sorted(found, key=len, reverse=True)


@functools.cache
def _own_urls_for(base: str) -> re.Pattern[str]:
    return re.compile(re.escape(base) + r"/[^\s\"'<>]+")


def _own_urls() -> re.Pattern[str]:
    """Our tracking and unsubscribe URLs (each delivery has its own)."""
    return _own_urls_for(settings.PUBLIC_BASE_URL.rstrip("/"))


class _Batch:
    """What one batch of deliveries shares: template look-ups, the breakers it found closed, and
    the provider's last acceptance, not yet written.

    Before each provider call the delivery is marked (``provider_call_at``) in the statement
    that records the previous call's acceptance, so that a crash can repeat at most the call in
    flight, and the sweep flags that one ``possibly_duplicate`` (DESIGN.md, "The delivery
    pipeline" 6). One statement per call: the acceptance waits only for the next delivery's
    render.
    """

    def __init__(self) -> None:
        self.templates: dict[tuple[str, str], str] = {}
        self.closed: set[str] = set()  # breakers checked closed, no failure since
        self.succeeded: set[str] = set()  # breakers told of a success, no failure since
        self.sent: list[Acceptance] = []

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

    def calling(self, deliveries: Sequence[Delivery]) -> None:
        """Marks ``deliveries`` as about to reach their provider, writing the acceptance held
        since the last call in the same statement."""
        sent, self.sent = self.sent, []
        _written(lambda: deliveries_record_sent(sent, calling=[d.id for d in deliveries]))

    def add_sent(
        self,
        delivery: Delivery,
        alias: str,
        index: int,
        result: SendResult,
        latency_ms: float,
        **event_data: Any,
    ) -> None:
        """Holds a provider's acceptance until the next call or the batch's end."""
        self.sent.append(
            Acceptance(delivery, alias, index, result, latency_ms, timezone.now(), event_data)
        )

    def flush(self) -> None:
        if self.sent:
            sent, self.sent = self.sent, []
            _written(lambda: deliveries_record_sent(sent))


def _written(write: Callable[[], object]) -> None:
    """Runs a record of provider calls, again on a new connection while PostgreSQL is away
    (a restart): the calls were made, and a record given up on would send them twice. The
    statement only touches deliveries still held, so a retry after a lost answer does nothing
    twice. Gives up after a quarter of the lease, leaving the sweep to flag what was called."""
    deadline = time.monotonic() + settings.DELIVERY_LEASE_SECONDS / 4
    pause = 0.2
    while True:
        try:
            write()
            return
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                raise
            connection.close()
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def delivery_attempt(delivery_id: uuid.UUID | str) -> str:
    """Sends one delivery once: claim, render, pick a provider, call it, record the outcome.

    Safe to run twice: a second copy finds nothing to claim. Returns what happened (for logs and
    tests): not_claimed, sent, failed, ambiguous, retry, failover, delayed, skipped (its
    frequency cap is reached: ``services.caps``).
    """
    return deliveries_attempt([delivery_id])[str(delivery_id)]


def deliveries_attempt(delivery_ids: Sequence[uuid.UUID | str]) -> dict[str, str]:
    """Sends a batch of deliveries, each once (see :func:`delivery_attempt`): one claim for the
    batch, then each is rendered and sent in turn; its failure is handled alone (retry, failover,
    failed) while the others go on; successes are recorded together. Returns
    ``{delivery id: outcome}``.

    Bulk deliveries (priority ``low``) whose provider has a batch call (``Provider.batch_size``)
    are rendered first, grouped by request, template version, variant, locale and provider, and
    each group goes out in calls of ``batch_size`` (:func:`_attempt_group`); every other
    delivery, and each one a batch call does not carry, takes the single path. Transactional
    deliveries stay one call each: a batch call shares one fate and the slowest recipient's
    latency.

    A delivery the batch has not reached when half its lease has passed (slow providers) is put
    back in the queue rather than sent late: past its lease the sweep may hand it to another
    worker.
    """
    outcomes = {str(i): "not_claimed" for i in delivery_ids}
    # Frequency caps are kept here, just before the providers, for the whole batch at once.
    deliveries, capped = deliveries_within_caps(deliveries_claim(delivery_ids))
    outcomes.update(capped)
    claimed_at = time.monotonic()
    batch = _Batch()
    groups: dict[tuple[object, ...], list[tuple[Delivery, Message]]] = {}

    def late() -> bool:
        return bool(time.monotonic() - claimed_at > settings.DELIVERY_LEASE_SECONDS / 2)

    try:
        for delivery in deliveries:
            if late():
                batch.flush()
                outcomes[str(delivery.id)] = delivery_requeue(delivery, 0, "delayed")
            elif _batchable(delivery):
                prepared = _prepare(delivery, batch)
                if isinstance(prepared, str):
                    outcomes[str(delivery.id)] = prepared
                    continue
                key = (
                    delivery.notification.request_id,
                    delivery.channel,
                    delivery.template_version,
                    delivery.variant,
                    delivery.notification.locale,
                    delivery.provider_index,
                )
                groups.setdefault(key, []).append((delivery, prepared))
            else:
                outcomes[str(delivery.id)] = _attempt(delivery, batch)
        for members in groups.values():
            outcomes.update(_attempt_group(members, batch, late))
    finally:
        batch.flush()
    return outcomes


def _batchable(delivery: Delivery) -> bool:
    if delivery.priority != "low" or delivery.channel == "push":
        return False
    chain = registry.chain(delivery.channel)
    return delivery.provider_index < len(chain) and chain[delivery.provider_index].batch_size > 1


def _prepare(delivery: Delivery, batch: _Batch) -> Message | str:
    """The delivery's message, or the outcome when it cannot be rendered."""
    try:
        return _message_for(delivery, batch)
    except RenderBusyError:
        # This process's render threads are taken (by a render that overran): not the
        # delivery's fault, so it waits its turn rather than failing.
        return delivery_requeue(delivery, settings.TEMPLATES_TIME_LIMIT, "delayed")
    except (APIError, ProviderError) as exc:
        detail = getattr(exc, "detail", None) or str(exc)
        # A template past a render limit fails with that reason; other failures are one kind.
        reason = "render_limit" if isinstance(exc, RenderLimitError) else "render_error"
        delivery_fail(delivery, reason, error=f"render: {detail}")
        return "failed"


def _pick(delivery: Delivery, batch: _Batch) -> tuple[Provider, int, list[Provider]] | str:
    """The provider to call for ``delivery`` (its chain's, from its ``provider_index``, skipping
    open circuits), or the outcome when none can be called now."""
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
            return delivery_requeue(
                delivery,
                settings.PROVIDER_BREAKER_RESET_SECONDS,
                "delayed",
                provider_index=delivery.provider_index,
            )
        delivery_fail(
            delivery, "providers_exhausted", error=delivery.error or "every provider failed"
        )
        return "failed"
    return chain[index], index, chain


def _attempt(delivery: Delivery, batch: _Batch, message: Message | None = None) -> str:
    # Marked before its render too: a delivery whose render or call kills the worker each
    # time is counted (``crashes``) and dead-lettered by the sweep.
    batch.calling([delivery])
    if message is None:
        prepared = _prepare(delivery, batch)
        if isinstance(prepared, str):
            return prepared
        message = prepared
    fault_point("delivery.before_provider_call", delivery.address)

    if delivery.channel == "push":
        return _push_attempt(delivery, message, batch)
    picked = _pick(delivery, batch)
    if isinstance(picked, str):
        return picked
    provider, index, chain = picked

    wait = ratelimit.acquire(provider)
    if wait > 0:
        return delivery_requeue(delivery, wait, "delayed", provider_index=index)

    started = time.perf_counter()
    try:
        result = provider.send(message)
    except ProviderError as exc:
        latency = (time.perf_counter() - started) * 1000
        batch.record_failure(provider.alias)
        return delivery_provider_error(delivery, provider, index, exc, latency, chain)
    latency = (time.perf_counter() - started) * 1000
    fault_point("delivery.after_provider_call", delivery.address)
    batch.record_success(provider.alias)
    if delivery.channel == "sms":
        batch.add_sent(
            delivery, provider.alias, index, result, latency, segments=_segments(message, result)
        )
    else:
        batch.add_sent(delivery, provider.alias, index, result, latency)
    return "sent"


def _attempt_group(
    members: list[tuple[Delivery, Message]], batch: _Batch, late: Callable[[], bool]
) -> dict[str, str]:
    """Sends rendered deliveries of one request, version and provider in batch calls
    (``Provider.send_batch``), ``batch_size`` at a time. Each answer is recorded as the single
    path records it (one Acceptance each, or ``delivery_provider_error`` with the call's error
    for each delivery); a delivery the call did not carry, every delivery after a permanent
    refusal of the whole call, and a group of one go through :func:`_attempt` alone.
    """
    outcomes: dict[str, str] = {}
    picked = _pick(members[0][0], batch) if len(members) > 1 else ""
    if isinstance(picked, str) or picked[0].batch_size < 2:
        # One delivery, or the breaker moved the group to a provider without a batch call.
        for delivery, message in members:
            outcomes[str(delivery.id)] = _attempt(delivery, batch, message)
        return outcomes
    provider, index, chain = picked
    size = provider.batch_size
    for start in range(0, len(members), size):
        chunk = members[start : start + size]
        if late():
            batch.flush()
            for delivery, _ in chunk:
                outcomes[str(delivery.id)] = delivery_requeue(delivery, 0, "delayed")
            continue
        wait = ratelimit.acquire(provider)
        if wait > 0:
            for delivery, _ in chunk:
                outcomes[str(delivery.id)] = delivery_requeue(
                    delivery, wait, "delayed", provider_index=index
                )
            continue
        batch.calling([delivery for delivery, _ in chunk])
        started = time.perf_counter()
        try:
            answers: list[SendResult | None] = provider.send_batch([m for _, m in chunk])
        except ProviderError as exc:
            latency = (time.perf_counter() - started) * 1000
            if exc.permanent:
                answers = [None] * len(chunk)
            else:
                batch.record_failure(provider.alias)
                for delivery, _ in chunk:
                    outcomes[str(delivery.id)] = delivery_provider_error(
                        delivery, provider, index, exc, latency, chain
                    )
                continue
        latency = (time.perf_counter() - started) * 1000
        alone = []
        for (delivery, message), answer in zip(chunk, answers, strict=True):
            if answer is None:
                alone.append((delivery, message))
                continue
            batch.record_success(provider.alias)
            batch.add_sent(delivery, provider.alias, index, answer, latency)
            outcomes[str(delivery.id)] = "sent"
        batch.flush()
        for delivery, message in alone:
            outcomes[str(delivery.id)] = _attempt(delivery, batch, message)
    return outcomes


def _segments(message: Message, result: SendResult) -> int:
    """The SMS's segments (what it is priced by): the provider's count when it gives one, else
    ours from the text."""
    counted = result.raw.get("num_segments") if isinstance(result.raw, dict) else None
    try:
        if counted is not None and int(counted) > 0:
            return int(counted)
    except (TypeError, ValueError):
        pass
    return max(int(sms.sms_info(message.text)["segments"]), 1)


def _push_attempt(delivery: Delivery, message: Message, batch: _Batch) -> str:
    """Push fans out to every device of the user (FCM and Web Push serve different devices; they
    are not failover alternatives): ``notifications.push`` sends and answers like one provider,
    recorded as the chain's answers are."""
    started = time.perf_counter()
    try:
        result = push.push_deliver(delivery, message)
    except push.PushDelayedError as exc:
        return delivery_requeue(delivery, exc.delay, "delayed")
    except ProviderError as exc:
        latency = (time.perf_counter() - started) * 1000
        sender = push.PushSender(exc.provider or "push")
        return delivery_provider_error(delivery, sender, 0, exc, latency, [sender])
    latency = (time.perf_counter() - started) * 1000
    fault_point("delivery.after_provider_call", delivery.address)
    batch.add_sent(
        delivery,
        result.raw.get("provider", "push"),
        0,
        result,
        latency,
        devices=result.raw.get("devices", {}),
    )
    return "sent"


@transaction.atomic
def deliveries_resend_ambiguous(*, delivery_ids: Iterable[uuid.UUID | str], actor: str) -> int:
    """Queues the ambiguous deliveries among ``delivery_ids`` again, at staff's request (the
    provider may have received them: the recipient may get the message twice). Each gets a
    ``queued`` event naming ``actor``; deliveries in any other status are left alone. Returns how
    many were queued."""
    found = list(
        Delivery.objects.select_for_update(of=("self",))
        .select_related("notification__request")
        .filter(id__in=list(delivery_ids), status="ambiguous")
    )
    if not found:
        return 0
    Delivery.objects.filter(id__in=[d.id for d in found]).update(
        status="queued", next_attempt_at=None, updated_at=timezone.now()
    )
    events.record_many(
        [delivery_event(d, "queued", resent_by=actor, was="ambiguous") for d in found]
    )
    for d in found:
        audit_record(
            "delivery.resend_ambiguous",
            "notifications.delivery",
            d.pk,
            changes={"status": ["ambiguous", "queued"]},
        )
    to_enqueue = [(str(d.id), d.priority) for d in found]
    transaction.on_commit(lambda: enqueue_many(to_enqueue))
    return len(found)
