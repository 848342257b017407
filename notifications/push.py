"""Push: the device registry and the fan-out of one push Delivery to every device of its user.

Push is one channel, but its two providers are not failover alternatives: FCM serves the ios and
android devices (registration tokens, 500 a call), Web Push the browsers (one encrypted request
per subscription). :func:`push_deliver` groups the user's active devices by platform, calls each
provider, records what every device answered on ``Delivery.device_results`` and answers the
pipeline (``services.delivery_attempt``) like a single provider would:

- at least one device got it → a :class:`SendResult` (``sent``; ``delivered`` when everything
  went to the development outbox);
- some devices met a quota, a 429 or an unavailable service → the provider's Transient /
  RateLimited error, so the pipeline's backoff applies; the next attempt sends only to the devices
  still owed the message (the others are recorded as done). On the last attempt a push that
  reached at least one device is a success and the rest are recorded as failed;
- a provider whose circuit is open or whose rate bucket is empty → :class:`PushDelayedError` (the
  delivery waits without spending an attempt, as the chain does for an open circuit);
- no device could take it (all unregistered, refused) → PermanentProviderError.

Dead tokens (UNREGISTERED, invalid, sender mismatch) and gone subscriptions (404/410) deactivate
their device at once: it is never used again. Without FCM credentials FCM devices go to the
development outbox; Web Push always sends for real.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from communication.audit import audit_record
from communication.circuit import CircuitOpenError
from communication.exceptions import APIError, NotFoundError
from notifications.models import Delivery, Device
from notifications.providers import ratelimit, registry
from notifications.providers.base import (
    Message,
    PermanentProviderError,
    Provider,
    ProviderError,
    ProviderNotConfiguredError,
    RateLimitedError,
    SendResult,
)
from notifications.providers.fcm import (
    DEAD_TOKEN_CODES,
    FcmPushProvider,
    PushContent,
)
from notifications.providers.outbox import OutboxProvider

if TYPE_CHECKING:
    # Only for annotations: pywebpush is loaded when Web Push is configured, not with this module.
    from notifications.providers.webpush import WebPushProvider

logger = logging.getLogger(__name__)
# The token and endpoint are encrypted: a device is found by their keyed hash.
_TOKEN_HASH = Device._meta.get_field("token_hash")
_ENDPOINT_HASH = Device._meta.get_field("endpoint_hash")

# Codes after which a device is deactivated (FCM's dead tokens, Web Push's 404/410).
DEACTIVATE_CODES = DEAD_TOKEN_CODES | {"gone"}
DONE = ("sent", "delivered", "failed", "deactivated")


class PushDelayedError(Exception):
    """Some devices wait for a provider whose circuit is open or whose rate bucket is empty."""

    def __init__(self, delay: float):
        super().__init__(f"push delayed {delay:.1f}s")
        self.delay = delay


# ------------------------------------------------------------------------------------ registry


def device_list(user) -> QuerySet[Device]:
    """The user's active devices, newest first (one query)."""
    return Device.objects.filter(user=user, active=True).order_by("-last_seen_at", "-id")


def _lookup(platform: str, token: str, endpoint: str) -> dict:
    if platform == "web":
        return {"endpoint_hash": _ENDPOINT_HASH.hash(endpoint)}
    return {"token_hash": _TOKEN_HASH.hash(token)}


def device_register(
    *,
    user,
    platform: str,
    token: str = "",
    subscription: dict | None = None,
    app_id: str = "",
    browser: str = "",
    locale: str = "",
) -> tuple[Device, bool]:
    """Registers a device or refreshes it: the same token or endpoint is one row, whoever
    registered it last (a token follows the app install, so a new owner takes it over). A
    deactivated device comes back active. Returns ``(device, created)``.

    Two registrations racing for the same token: one inserts, the other finds it and updates.
    """
    subscription = subscription or {}
    endpoint = subscription.get("endpoint", "") if platform == "web" else ""
    keys = subscription.get("keys") or {}
    values = {
        "user": user,
        "platform": platform,
        "token": "" if platform == "web" else token,
        "endpoint": endpoint,
        "p256dh": keys.get("p256dh", "") if platform == "web" else "",
        "auth": keys.get("auth", "") if platform == "web" else "",
        "active": True,
        "failure_count": 0,
        "last_error": "",
        "deactivated_at": None,
        "last_seen_at": timezone.now(),
    }
    for field_name, value in (("app_id", app_id), ("browser", browser), ("locale", locale)):
        if value:
            values[field_name] = value
    lookup = _lookup(platform, token, endpoint)
    for _ in range(3):
        with transaction.atomic():
            device = Device.objects.select_for_update().filter(**lookup).first()
            if device is not None:
                # A refresh of an active device by its owner (each app start) is no change
                # the trail keeps; a new owner or a device coming back is.
                registers = device.user_id != user.pk or not device.active
                for name, value in values.items():
                    setattr(device, name, value)
                device.save()
                if registers:
                    _device_audit(device, "register")
                return device, False
            try:
                with transaction.atomic():
                    device = Device.objects.create(**values)
                    _device_audit(device, "register")
                    return device, True
            except IntegrityError:
                continue  # inserted by a concurrent registration: update it instead
    raise APIError("The device could not be registered; retry.", code="conflict")


@transaction.atomic
def device_delete(*, user, device_id) -> None:
    """Forgets one of the user's devices; someone else's (or an unknown id) is a 404."""
    deleted, _ = Device.objects.filter(id=device_id, user=user).delete()
    if not deleted:
        raise NotFoundError("No such device.")
    audit_record("device.remove", "notifications.device", device_id, changes={"user": str(user.pk)})


def _device_audit(device: Device, verb: str) -> None:
    """The trail names the device, its owner and platform; never its token or endpoint."""
    audit_record(
        f"device.{verb}",
        "notifications.device",
        device.pk,
        changes={"user": str(device.user_id), "platform": device.platform},
    )


# ------------------------------------------------------------------------------------- content


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _ttl() -> int:
    options = settings.NOTIFICATION_PROVIDERS.get("webpush", {}).get("OPTIONS", {})
    return int(options.get("TTL") or 86400)


def content_for(delivery: Delivery, message: Message) -> PushContent:
    """The rendered push (title, body, image, deep link, data) in platform-neutral form.

    Templates may steer the platforms through reserved ``data`` keys: ``collapse_key``, ``badge``,
    ``sound``, ``android_channel_id``, ``ttl``.
    """
    data = dict(message.data or {})
    data.setdefault("delivery_id", str(delivery.id))
    data.setdefault("notification_id", str(delivery.notification_id))
    data.setdefault("category", message.category)
    return PushContent(
        title=message.title,
        body=message.text,
        image=message.image or data.get("image") or "",
        link=message.link or data.get("deep_link") or data.get("action_url") or "",
        data=data,
        collapse_key=str(data.get("collapse_key") or ""),
        priority=delivery.priority,
        ttl=_int_or_none(data.get("ttl")) or _ttl(),
        sound=str(data.get("sound") or "default"),
        badge=_int_or_none(data.get("badge")),
        category=message.category,
        android_channel_id=str(data.get("android_channel_id") or ""),
    )


def web_payload(content: PushContent) -> str:
    """What a browser's service worker receives (``static/notifications/push/sw.js`` shows it)."""
    payload = {
        "title": content.title,
        "body": content.body,
        "image": content.image or None,
        "url": content.link or None,
        "tag": content.collapse_key or None,
        "data": content.data or {},
    }
    return json.dumps(
        {k: v for k, v in payload.items() if v is not None},
        separators=(",", ":"),
        ensure_ascii=False,
    )


# ------------------------------------------------------------------------------------- fan-out


@dataclass
class _Outcome:
    """What one attempt learned, device by device."""

    results: dict
    now: str
    transient: list[tuple[str, ProviderError]] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    succeeded: set[str] = field(default_factory=set)  # provider aliases with a success
    message_ids: list[str] = field(default_factory=list)

    def record(self, device: Device, provider: str, status: str, **extra) -> None:
        entry = {"platform": device.platform, "provider": provider, "status": status}
        entry.update({k: v for k, v in extra.items() if v not in (None, "")})
        entry["at"] = self.now
        self.results[str(device.id)] = entry
        if status in ("sent", "delivered"):
            self.succeeded.add(provider)
            if extra.get("message_id"):
                self.message_ids.append(extra["message_id"])

    def error(self, device: Device, provider: str, exc: ProviderError) -> None:
        if exc.permanent:
            status = "deactivated" if exc.code in DEACTIVATE_CODES else "failed"
        else:
            status = "pending"
            self.transient.append((provider, exc))
        self.record(device, provider, status, code=exc.code or "error", error=str(exc)[:300])


def _providers() -> tuple[FcmPushProvider | OutboxProvider, WebPushProvider | None, str]:
    """(FCM or the outbox, Web Push or None, why Web Push is missing)."""
    chain = registry.chain("push")
    by_name = {p.name: p for p in chain}
    found = by_name.get("fcm")  # only FcmPushProvider is named "fcm"
    fcm = (
        found
        if isinstance(found, FcmPushProvider)
        else OutboxProvider("outbox", {"CHANNEL": "push"})
    )
    # Only WebPushProvider is named "webpush"; the registry builds it from settings by alias.
    web = cast("WebPushProvider | None", by_name.get("webpush"))
    why = ""
    if web is None:
        try:
            web = cast("WebPushProvider", registry.build("webpush"))
        except (ProviderNotConfiguredError, ImportError) as exc:
            why = str(exc)
            web = None
    return fcm, web, why


def _gate(provider: Provider, outcome: _Outcome, devices: list[Device]) -> bool:
    """Whether ``provider`` may be called now; if not, its devices wait (circuit, rate)."""
    if provider.name == "outbox":
        return True
    try:
        registry.provider_breaker(provider.alias).before_call()
    except CircuitOpenError:
        wait = float(settings.PROVIDER_BREAKER_RESET_SECONDS)
    else:
        wait = ratelimit.acquire(provider)
    if wait <= 0:
        return True
    outcome.delays.append(wait)
    for device in devices:
        outcome.record(device, provider.alias, "pending", code="delayed")
    return False


def _send_fcm(
    provider: FcmPushProvider | OutboxProvider,
    devices: list[Device],
    content: PushContent,
    delivery: Delivery,
    outcome: _Outcome,
) -> None:
    if isinstance(provider, OutboxProvider):
        for device in devices:
            result = provider.send(
                Message(
                    channel="push",
                    to=device.token,
                    title=content.title,
                    text=content.body,
                    data={**(content.data or {}), "platform": device.platform},
                    delivery_id=str(delivery.id),
                    category=content.category,
                )
            )
            outcome.record(device, "outbox", "delivered", message_id=result.provider_message_id)
        return
    try:
        answers = provider.send_multicast([d.token for d in devices], content)
    except ProviderError as exc:
        for device in devices:
            outcome.error(device, provider.alias, exc)
        return
    for device, answer in zip(devices, answers, strict=True):
        if answer.error is None:  # ``answer.ok``, spelled so that the error's type narrows
            outcome.record(device, provider.alias, "sent", message_id=answer.message_id[:255])
        else:
            outcome.error(device, provider.alias, answer.error)


def _send_web(
    provider: WebPushProvider,
    devices: list[Device],
    content: PushContent,
    delivery: Delivery,
    outcome: _Outcome,
) -> None:
    payload = web_payload(content)
    for device in devices:
        subscription = {
            "endpoint": device.endpoint,
            "keys": {"p256dh": device.p256dh, "auth": device.auth},
        }
        try:
            result = provider.send_to(
                subscription,
                payload,
                ttl=content.ttl,
                urgency=delivery.priority,
                topic=content.collapse_key,
            )
        except ProviderError as exc:
            outcome.error(device, provider.alias, exc)
            continue
        outcome.record(device, provider.alias, "sent", message_id=result.provider_message_id[:255])


def _save(delivery: Delivery, outcome: _Outcome, devices: list[Device]) -> None:
    """Device health and the per-device results, if this worker still holds the delivery."""
    now = timezone.now()
    by_status: dict[tuple[str, str], list[int]] = {}
    for device in devices:
        entry = outcome.results.get(str(device.id))
        if entry is None or entry.get("at") != outcome.now:
            continue  # not tried in this attempt
        by_status.setdefault((entry["status"], entry.get("code", "")), []).append(device.id)
    for (status, code), ids in by_status.items():
        if status in ("sent", "delivered"):
            Device.objects.filter(id__in=ids).exclude(failure_count=0, last_error="").update(
                failure_count=0, last_error=""
            )
        elif status == "deactivated":
            Device.objects.filter(id__in=ids).update(
                active=False,
                deactivated_at=now,
                failure_count=F("failure_count") + 1,
                last_error=code[:500],
            )
        elif code != "delayed":
            Device.objects.filter(id__in=ids).update(
                failure_count=F("failure_count") + 1, last_error=code[:500]
            )
    Delivery.objects.filter(id=delivery.id, status="sending", attempts=delivery.attempts).update(
        device_results=outcome.results
    )
    delivery.device_results = outcome.results


def push_deliver(delivery: Delivery, message: Message) -> SendResult:
    """Sends one push delivery to every active device of its user still owed it (see the module
    docstring for what it answers). Raises ProviderError subclasses and :class:`PushDelayedError`;
    every raised error carries ``provider`` (the alias to blame)."""
    outcome = _Outcome(results=dict(delivery.device_results or {}), now=timezone.now().isoformat())
    done = {key for key, entry in outcome.results.items() if entry.get("status") in DONE}
    user_id = delivery.notification.user_id
    devices = (  # a notification without a user has no devices
        list(Device.objects.filter(user_id=user_id, active=True).order_by("id"))
        if user_id is not None
        else []
    )
    pending = [d for d in devices if str(d.id) not in done]
    content = content_for(delivery, message)
    fcm, web, web_missing = _providers()

    fcm_devices = [d for d in pending if d.platform in Device.FCM_PLATFORMS]
    web_devices = [d for d in pending if d.platform == Device.Platform.WEB]
    if fcm_devices and _gate(fcm, outcome, fcm_devices):
        _send_fcm(fcm, fcm_devices, content, delivery, outcome)
    if web_devices:
        if web is None:
            for device in web_devices:
                outcome.record(
                    device, "webpush", "failed", code="not_configured", error=web_missing[:300]
                )
        elif _gate(web, outcome, web_devices):
            _send_web(web, web_devices, content, delivery, outcome)

    reached = sum(1 for e in outcome.results.values() if e["status"] in ("sent", "delivered"))
    waiting = [d for d in devices if outcome.results.get(str(d.id), {}).get("status") == "pending"]
    last_try = delivery.provider_attempts + 1 >= settings.DELIVERY_MAX_ATTEMPTS_PER_PROVIDER
    raise_error: ProviderError | None = None
    if waiting and outcome.transient and reached and last_try:
        # Out of retries: the push reached some of the user's devices, the others give up.
        for device in waiting:
            outcome.results[str(device.id)]["status"] = "failed"
        waiting = []
    if waiting and outcome.transient:
        # A rate limit says how long to wait: the longest one wins over a plain transient error.
        alias, raise_error = max(
            outcome.transient,
            key=lambda pair: (isinstance(pair[1], RateLimitedError), pair[1].retry_after or 0),
        )
        raise_error.provider = alias
    for alias in outcome.succeeded - {"outbox"}:
        registry.provider_breaker(alias).record_success()
    failed_aliases = {a for a, _ in outcome.transient} - outcome.succeeded
    for alias in failed_aliases - {getattr(raise_error, "provider", "")}:
        registry.provider_breaker(alias).record_failure()
    _save(delivery, outcome, devices)

    if raise_error is not None:
        raise raise_error
    if waiting:
        raise PushDelayedError(max(outcome.delays or [1.0]))
    statuses = [entry["status"] for entry in outcome.results.values()]
    if not reached:
        if not statuses:
            error = PermanentProviderError("no active push device", code="no_device")
        else:
            codes = sorted({e.get("code", "") for e in outcome.results.values()} - {""})
            error = PermanentProviderError(
                f"no device took the push ({', '.join(codes) or 'refused'})",
                code="no_device"
                if all(s == "deactivated" for s in statuses)
                else (codes[0] if codes else "refused"),
            )
        error.provider = "webpush" if web_devices and not fcm_devices else fcm.alias
        raise error
    providers = sorted({e["provider"] for e in outcome.results.values() if e["status"] in DONE})
    delivered_only = all(
        e["status"] == "delivered"
        for e in outcome.results.values()
        if e["status"] in ("sent", "delivered")
    )
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    return SendResult(
        provider_message_id=(outcome.message_ids[0] if len(outcome.message_ids) == 1 else "")
        or f"push-{delivery.id}",
        status="delivered" if delivered_only else "sent",
        raw={"provider": "+".join(providers)[:40] or "push", "devices": counts},
    )


class PushSender:
    """Stands for the provider to blame when the pipeline records a push failure."""

    def __init__(self, alias: str):
        self.alias = alias
