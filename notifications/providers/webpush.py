"""Web Push (browsers) with ``pywebpush``: aes128gcm-encrypted payloads signed with VAPID.

Web Push needs no third-party account (the browser's push service accepts anyone holding a VAPID
key pair), so this provider always sends for real, never to the development outbox.

Keys: ``VAPID_PRIVATE_KEY`` / ``VAPID_PUBLIC_KEY`` (PEM, or base64url of the raw key: the 32-byte
private scalar, the 65-byte public point), else, in development, a pair generated once under
``VAR_DIR`` (several processes may start at once: one generates under a file lock, the others read
it). ``VAPID_SUBJECT`` (``mailto:`` or ``https:``) defaults to ``mailto:`` + ``DEFAULT_FROM_EMAIL``.

Answers (RFC 8030 and https://web.dev/articles/push-notifications-web-push-protocol): 201 created;
404/410 the subscription is gone (deactivate the device); 413 payload too large; 429 slow down
(``Retry-After``); 400/401/403 our request or our VAPID key is refused; 5xx the push service's
own trouble. A push service de-duplicates nothing, but a repeated push only shows a notification
twice (the ``Topic`` header replaces a pending one), so a push that may have been sent is resent.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import re
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.signals import setting_changed
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from notifications.providers._http import retry_after
from notifications.providers.base import (
    Message,
    PermanentProviderError,
    Provider,
    ProviderError,
    ProviderNotConfiguredError,
    RateLimitedError,
    SendResult,
    TransientProviderError,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
# RFC 8291 §4: push services must accept 4096 bytes of encrypted payload; aes128gcm adds a
# 86-byte header (salt, record size, the 65-byte key), a 16-byte tag and a padding delimiter.
MAX_RECORD = 4096
MAX_PLAINTEXT = MAX_RECORD - 86 - 16 - 1
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
URGENCY = {"low": "low", "normal": "normal", "high": "high", "urgent": "high"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(value: str) -> bytes:
    value = value.strip()
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


# ------------------------------------------------------------------------------------ VAPID keys


def _load_private(value: str) -> ec.EllipticCurvePrivateKey:
    value = value.strip().replace("\\n", "\n")  # PEM in a one-line environment variable
    if "-----BEGIN" in value:
        key = serialization.load_pem_private_key(value.encode(), password=None)
    else:
        raw = b64url_decode(value)
        if len(raw) == 32:
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        else:  # the base64url DER that py_vapid writes
            key = serialization.load_der_private_key(raw, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("a VAPID key is a P-256 (prime256v1) EC key")
    return key


def public_raw(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The 65-byte uncompressed point, the form ``pushManager.subscribe`` takes."""
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _public_raw_from_setting(value: str) -> bytes:
    value = value.strip().replace("\\n", "\n")
    if "-----BEGIN" in value:
        key = serialization.load_pem_public_key(value.encode())
        return key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return b64url_decode(value)


def vapid_path() -> Path:
    return Path(settings.VAR_DIR) / "vapid_private_key.pem"


def _generated_key() -> ec.EllipticCurvePrivateKey:
    path = vapid_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pem)
            tmp.chmod(0o600)
            tmp.replace(path)
            logger.info("generated a VAPID key pair", extra={"path": str(path)})
        data = path.read_bytes()
    return _load_private(data.decode())


def _options() -> dict[str, Any]:
    return dict(settings.NOTIFICATION_PROVIDERS.get("webpush", {}).get("OPTIONS", {}))


@lru_cache(maxsize=8)
def _keys_for(private: str, public: str, development: bool) -> ec.EllipticCurvePrivateKey:
    if not private:
        if public:
            raise ProviderNotConfiguredError("VAPID_PUBLIC_KEY is set without VAPID_PRIVATE_KEY")
        if not development:
            raise ProviderNotConfiguredError(
                "VAPID_PRIVATE_KEY is not set (keys are only generated in development)"
            )
        return _generated_key()
    try:
        key = _load_private(private)
    except ValueError as exc:
        raise ProviderNotConfiguredError(f"VAPID_PRIVATE_KEY is not usable: {exc}") from exc
    if public:
        try:
            given = _public_raw_from_setting(public)
        except ValueError as exc:
            raise ProviderNotConfiguredError(f"VAPID_PUBLIC_KEY is not usable: {exc}") from exc
        if given != public_raw(key):
            raise ProviderNotConfiguredError("VAPID_PUBLIC_KEY is not the private key's pair")
    return key


def vapid_private_key(options: dict[str, Any] | None = None) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key (settings, else generated under VAR_DIR in development).

    Raises ProviderNotConfiguredError when the settings are unusable.
    """
    options = _options() if options is None else options
    return _keys_for(
        options.get("VAPID_PRIVATE_KEY") or "",
        options.get("VAPID_PUBLIC_KEY") or "",
        bool(settings.DEVELOPMENT),
    )


def vapid_public_key(options: dict[str, Any] | None = None) -> str:
    """base64url of the raw 65-byte public point (``applicationServerKey``)."""
    return b64url(public_raw(vapid_private_key(options)))


def generate_pair() -> dict[str, str]:
    """A fresh key pair in the forms the settings take (for ``manage.py vapid_keys``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    raw_private = key.private_numbers().private_value.to_bytes(32, "big")
    return {
        "VAPID_PRIVATE_KEY": b64url(raw_private),
        "VAPID_PUBLIC_KEY": b64url(public_raw(key)),
        "private_pem": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    }


def vapid_subject(options: dict[str, Any] | None = None) -> str:
    options = _options() if options is None else options
    subject = (options.get("VAPID_SUBJECT") or "").strip()
    if not subject:
        subject = f"mailto:{parseaddr(settings.DEFAULT_FROM_EMAIL)[1] or 'noreply@localhost'}"
    if not subject.startswith(("mailto:", "https:")):
        raise ProviderNotConfiguredError("VAPID_SUBJECT must be a mailto: or https: URL")
    return subject


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("NOTIFICATION_PROVIDERS", "VAR_DIR", "DEVELOPMENT"):
        _keys_for.cache_clear()


setting_changed.connect(_on_setting_changed)


# -------------------------------------------------------------------------------------- provider


def topic_for(value: str) -> str:
    """A ``Topic`` header (≤ 32 base64url characters): the value itself when it fits."""
    if not value:
        return ""
    if _TOPIC.match(value):
        return value
    return b64url(hashlib.sha256(value.encode()).digest())[:32]


class WebPushProvider(Provider):
    """One push per subscription (``send_to``); the fan-out lives in ``notifications.push``."""

    name = "webpush"
    channel = "push"
    idempotent = True

    def check_configuration(self) -> None:
        self.private_key = vapid_private_key(self.options)
        self.subject = vapid_subject(self.options)
        self.ttl = int(self.options.get("TTL") or 86400)
        self.timeout = float(self.options.get("TIMEOUT") or DEFAULT_TIMEOUT)
        self.session = requests.Session()

    def public_key(self) -> str:
        return b64url(public_raw(self.private_key))

    def send(self, message: Message) -> SendResult:
        """``message.to`` is the subscription's JSON (``{"endpoint", "keys": {…}}``)."""
        subscription = json.loads(message.to)
        payload = json.dumps(message.data, separators=(",", ":"), ensure_ascii=False)
        return self.send_to(subscription, payload)

    def send_to(
        self,
        subscription: dict[str, Any],
        payload: str,
        *,
        ttl: int | None = None,
        urgency: str = "normal",
        topic: str = "",
    ) -> SendResult:
        """Encrypts ``payload`` for ``subscription`` and posts it to the push service.

        Raises PermanentProviderError (``code="gone"`` for 404/410: the caller deactivates the
        device; ``payload_too_large``), RateLimitedError, TransientProviderError.
        """
        data = payload.encode()
        if len(data) > MAX_PLAINTEXT:
            raise PermanentProviderError(
                f"push payload too large: {len(data)} bytes; push services accept "
                f"{MAX_PLAINTEXT} bytes before encryption ({MAX_RECORD} encrypted)",
                code="payload_too_large",
            )
        headers = {"Urgency": URGENCY.get(urgency, "normal")}
        if topic:
            headers["Topic"] = topic_for(topic)
        try:
            response = webpush(
                subscription_info=subscription,
                data=payload,
                # A Vapid instance: pywebpush would otherwise treat a string as a file path.
                vapid_private_key=Vapid(private_key=self.private_key),
                vapid_claims={"sub": self.subject},
                content_encoding="aes128gcm",
                ttl=self.ttl if ttl is None else ttl,
                headers=headers,
                timeout=self.timeout,
                requests_session=self.session,
            )
        except WebPushException as exc:
            raise self.error_for(exc) from exc
        except requests.RequestException as exc:
            raise TransientProviderError(
                f"push service unreachable: {exc!r}"[:1000], code="network"
            ) from exc
        except (ValueError, TypeError) as exc:  # a malformed subscription (keys, endpoint)
            raise PermanentProviderError(
                f"invalid subscription: {exc}"[:1000], code="invalid_subscription"
            ) from exc
        location = response.headers.get("Location", "") if hasattr(response, "headers") else ""
        return SendResult(
            provider_message_id=location[:255] or f"webpush-{response.status_code}",
            raw={"status": response.status_code},
        )

    def error_for(self, exc: WebPushException) -> ProviderError:
        status = exc.status_code
        text = (exc.message if isinstance(exc.message, str) else str(exc))[:1000]
        if status is None:
            # pywebpush raises it before sending for a malformed subscription.
            return PermanentProviderError(text, code="invalid_subscription")
        if status in (404, 410):
            return PermanentProviderError(text, code="gone", status_code=status)
        if status == 413:
            return PermanentProviderError(
                f"push payload too large for the push service (limit {MAX_RECORD} bytes "
                f"encrypted): {text}"[:1000],
                code="payload_too_large",
                status_code=status,
            )
        if status == 429:
            return RateLimitedError(
                text,
                code="rate_limited",
                status_code=status,
                retry_after=retry_after(getattr(exc.response, "headers", None)),
            )
        if status >= 500:
            return TransientProviderError(
                text,
                code="unavailable",
                status_code=status,
                retry_after=retry_after(getattr(exc.response, "headers", None)),
            )
        if status in (401, 403):
            # Our VAPID signature refused (a rotated key whose subscriptions are stale, or a
            # clock skew): the subscription is tied to the old key, it will never work again.
            return PermanentProviderError(text, code="vapid_refused", status_code=status)
        return PermanentProviderError(text, code=f"webpush_{status}", status_code=status)
