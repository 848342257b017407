"""Firebase Cloud Messaging (ios and android devices) with ``firebase-admin``.

Credentials: ``FCM_CREDENTIALS``, a service-account JSON file path or the JSON itself. Without
them the provider is left out of the push chain and ``notifications.push`` sends FCM devices to the
development outbox. The credential's ``token_uri`` is where Google's OAuth token exchange goes
(the tests point it at a local server).

The SDK hard-codes ``https://fcm.googleapis.com``; ``FCM_API_URL`` replaces it on the app's
messaging service (a private attribute, ``_fcm_url``: the SDK offers no option, see
https://github.com/firebase/firebase-admin-python/blob/master/firebase_admin/messaging.py).
``send_each_for_multicast`` takes up to 500 tokens and sends one HTTP request per token on a
thread pool, retrying 500/503 itself; the answer is one result per token.

Per-token errors (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode):
UNREGISTERED, an invalid registration token and SENDER_ID_MISMATCH mean the token will never work
(the device is deactivated); QUOTA_EXCEEDED is a rate limit (``Retry-After`` honoured);
UNAVAILABLE and INTERNAL are FCM's trouble (retried); THIRD_PARTY_AUTH_ERROR (our APNs / web
credentials) and INVALID_ARGUMENT about the message are permanent for this message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import requests
from firebase_admin import App, credentials, exceptions, initialize_app, messaging
from firebase_admin import _http_client as firebase_http

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

FCM_HOST = "https://fcm.googleapis.com"
MAX_TOKENS_PER_CALL = 500  # send_each_for_multicast's limit
DEFAULT_TIMEOUT = 10.0
# Error codes after which a token is dead: the device is deactivated and never used again.
DEAD_TOKEN_CODES = frozenset({"unregistered", "invalid_token", "sender_id_mismatch"})
ANDROID_PRIORITY = {"low": "normal", "normal": "high", "high": "high", "urgent": "high"}
APNS_PRIORITY = {"low": "5", "normal": "10", "high": "10", "urgent": "10"}

_apps_lock = threading.Lock()
_apps: dict[str, App] = {}


@dataclass
class TokenResult:
    token: str
    message_id: str = ""
    error: ProviderError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class PushContent:
    """What a push says, platform-neutral; ``notifications.push`` builds it from the render."""

    title: str = ""
    body: str = ""
    image: str = ""
    link: str = ""
    data: dict[str, Any] | None = None
    collapse_key: str = ""
    priority: str = "normal"
    ttl: int = 86400
    sound: str = "default"
    badge: int | None = None
    category: str = ""
    android_channel_id: str = ""


def _load_credentials(value: str) -> dict[str, Any]:
    value = value.strip()
    loaded: dict[str, Any]
    if value.startswith("{"):
        loaded = json.loads(value)
        return loaded
    with open(os.path.expanduser(value), encoding="utf-8") as fh:
        loaded = json.load(fh)
    return loaded


def string_data(data: dict[str, Any]) -> dict[str, str]:
    """FCM data payloads are string → string: other values travel as JSON."""
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in data.items()
        if v is not None
    }


class FcmPushProvider(Provider):
    name = "fcm"
    channel = "push"
    # A resent push shows twice at worst, and collapse keys replace a pending one.
    idempotent = True

    def check_configuration(self) -> None:
        raw = self.options.get("CREDENTIALS") or ""
        if not raw:
            raise ProviderNotConfiguredError("FCM_CREDENTIALS is not set")
        try:
            self.service_account = _load_credentials(raw)
        except (OSError, ValueError) as exc:
            raise ProviderNotConfiguredError(f"FCM_CREDENTIALS is not usable: {exc}") from exc
        if not self.service_account.get("project_id"):
            raise ProviderNotConfiguredError("FCM_CREDENTIALS has no project_id")
        self.api_url = (self.options.get("API_URL") or "").rstrip("/")
        self.timeout = float(self.options.get("TIMEOUT") or DEFAULT_TIMEOUT)
        self.android_channel_id = self.options.get("ANDROID_CHANNEL_ID") or ""

    # ----------------------------------------------------------------------------------- the app

    def app(self) -> App:
        """One firebase app per (alias, credentials, URL): settings changed by a test, or a
        rotated key, get an app of their own."""
        fingerprint = hashlib.sha256(
            json.dumps([self.service_account, self.api_url], sort_keys=True).encode()
        ).hexdigest()[:16]
        name = f"communication-{self.alias}-{fingerprint}"
        with _apps_lock:
            if name not in _apps:
                try:
                    cert = credentials.Certificate(self.service_account)
                except (ValueError, KeyError) as exc:
                    raise ProviderNotConfiguredError(f"FCM credentials refused: {exc}") from exc
                app = initialize_app(
                    cert,
                    options={
                        "projectId": self.service_account["project_id"],
                        "httpTimeout": self.timeout,
                    },
                    name=name,
                )
                service = messaging._get_messaging_service(app)
                base = self.api_url or FCM_HOST
                if self.api_url:
                    service._fcm_url = (
                        f"{self.api_url}/v1/projects/{self.service_account['project_id']}"
                        "/messages:send"
                    )
                # The SDK's own retries, minus one: urllib3 honours a 429's Retry-After by
                # sleeping in this worker (up to four times). A quota answer goes back to the
                # pipeline instead, which waits with the delivery queued. A pool as large as the
                # SDK's: one request per token on up to 500 threads.
                service._client.session.mount(
                    base,
                    requests.adapters.HTTPAdapter(
                        pool_connections=100,
                        pool_maxsize=100,
                        max_retries=firebase_http.DEFAULT_RETRY_CONFIG.new(
                            respect_retry_after_header=False
                        ),
                    ),
                )
                _apps[name] = app
            return _apps[name]

    # --------------------------------------------------------------------------------- messages

    def multicast(self, tokens: list[str], content: PushContent) -> messaging.MulticastMessage:
        """One message for many tokens: FCM applies the ``android`` block to Android devices and
        the ``apns`` block to iOS ones."""
        ttl = max(int(content.ttl), 0)
        data = dict(content.data or {})
        if content.link:
            data.setdefault("deep_link", content.link)
        android = messaging.AndroidConfig(
            priority=ANDROID_PRIORITY.get(content.priority, "high"),
            ttl=dt.timedelta(seconds=ttl),
            collapse_key=content.collapse_key or None,
            notification=messaging.AndroidNotification(
                channel_id=content.android_channel_id or self.android_channel_id or None,
                image=content.image or None,
                sound=content.sound or None,
            ),
        )
        apns_headers = {
            "apns-priority": APNS_PRIORITY.get(content.priority, "10"),
            "apns-expiration": str(int(dt.datetime.now(dt.UTC).timestamp()) + ttl),
        }
        if content.collapse_key:
            apns_headers["apns-collapse-id"] = content.collapse_key[:64]
        apns = messaging.APNSConfig(
            headers=apns_headers,
            payload=messaging.APNSPayload(
                aps=messaging.Aps(
                    alert=messaging.ApsAlert(
                        title=content.title or None, body=content.body or None
                    ),
                    sound=content.sound or None,
                    badge=content.badge,
                    category=content.category or None,
                    mutable_content=bool(content.image) or None,
                )
            ),
            fcm_options=messaging.APNSFCMOptions(image=content.image or None),
        )
        with warnings.catch_warnings():
            # firebase-admin 7 deprecates ``tokens`` for Firebase installation ids (``fids``);
            # the apps register FCM registration tokens, which FCM v1 still addresses.
            warnings.simplefilter("ignore", DeprecationWarning)
            return messaging.MulticastMessage(
                tokens=tokens,
                notification=messaging.Notification(
                    title=content.title or None,
                    body=content.body or None,
                    image=content.image or None,
                ),
                data=string_data(data),
                android=android,
                apns=apns,
            )

    def send_multicast(self, tokens: list[str], content: PushContent) -> list[TokenResult]:
        """Sends ``content`` to every token, 500 a call. One result per token, in order.

        Raises TransientProviderError when a whole call fails (the OAuth token exchange, the
        thread pool): nothing tells which tokens got it.
        """
        app = self.app()
        try:
            # One token exchange before the threads start (rather than a stampede of them).
            app.credential.get_access_token()
        except Exception as exc:  # google.auth's RefreshError, TransportError, ValueError …
            raise TransientProviderError(
                f"FCM OAuth token exchange failed: {exc}"[:1000], code="auth"
            ) from exc
        results: list[TokenResult] = []
        for start in range(0, len(tokens), MAX_TOKENS_PER_CALL):
            batch = tokens[start : start + MAX_TOKENS_PER_CALL]
            try:
                response = messaging.send_each_for_multicast(
                    self.multicast(batch, content), app=app
                )
            except exceptions.FirebaseError as exc:
                raise self.error_for(exc) from exc
            except ValueError as exc:  # the SDK refused the message before sending
                raise PermanentProviderError(
                    f"FCM message refused: {exc}"[:1000], code="invalid_message"
                ) from exc
            for token, answer in zip(batch, response.responses, strict=True):
                if answer.success:
                    results.append(TokenResult(token, message_id=answer.message_id or ""))
                else:
                    results.append(TokenResult(token, error=self.error_for(answer.exception)))
        return results

    def send(self, message: Message) -> SendResult:
        """One token (``message.to``); the pipeline's fan-out uses :meth:`send_multicast`."""
        content = PushContent(title=message.title, body=message.text, data=message.data)
        (result,) = self.send_multicast([message.to], content)
        if result.error is not None:
            raise result.error
        return SendResult(provider_message_id=result.message_id)

    # ----------------------------------------------------------------------------------- errors

    @staticmethod
    def _answer(exc: Exception) -> tuple[int | None, dict[str, Any], object]:
        response = getattr(exc, "http_response", None)
        status = getattr(response, "status_code", None)
        try:
            body = response.json() if response is not None else {}
        except ValueError:
            body = {}
        return status, (body.get("error") if isinstance(body, dict) else None) or {}, response

    def error_for(self, exc: Exception) -> ProviderError:
        """Maps the SDK's exception for one token (or a whole call) to the pipeline's errors."""
        status, error, response = self._answer(exc)
        text = f"{type(exc).__name__}: {exc}"[:1000]
        headers = getattr(response, "headers", None)
        if isinstance(exc, messaging.UnregisteredError):
            return PermanentProviderError(text, code="unregistered", status_code=status)
        if isinstance(exc, messaging.SenderIdMismatchError):
            return PermanentProviderError(text, code="sender_id_mismatch", status_code=status)
        if isinstance(exc, messaging.ThirdPartyAuthError):
            return PermanentProviderError(text, code="third_party_auth", status_code=status)
        if isinstance(exc, exceptions.InvalidArgumentError):
            violations = [
                v.get("field", "")
                for d in error.get("details", [])
                for v in (d.get("fieldViolations") or [])
            ]
            about_token = "message.token" in violations or "registration token" in str(
                error.get("message") or exc
            )
            code = "invalid_token" if about_token else "invalid_argument"
            return PermanentProviderError(text, code=code, status_code=status)
        if isinstance(exc, exceptions.ResourceExhaustedError):
            return RateLimitedError(
                text, code="quota_exceeded", status_code=status, retry_after=retry_after(headers)
            )
        if isinstance(exc, exceptions.UnauthenticatedError | exceptions.PermissionDeniedError):
            # Our service account refused: a configuration problem, not this device's.
            return TransientProviderError(text, code="auth", status_code=status)
        if isinstance(exc, exceptions.NotFoundError):
            # NOT_FOUND without UNREGISTERED may be a wrong project id: never a reason to drop
            # every device, so the token stays.
            return PermanentProviderError(text, code="not_found", status_code=status)
        return TransientProviderError(
            text, code="unavailable", status_code=status, retry_after=retry_after(headers)
        )
