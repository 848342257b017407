"""OVHcloud (SMS, for European numbers) through its HTTP API, called directly with ``requests``.

The ``ovh`` client only takes region names, so ``OVH_API_URL`` could not point at a proxy or at
the tests' local server: we sign the requests ourselves, as
https://help.ovhcloud.com/csm/en-api-getting-started-ovhcloud-api describes::

    X-Ovh-Signature: "$1$" + sha1_hex(AS + "+" + CK + "+" + METHOD + "+" + URL + "+" + BODY + "+" + TS)

The message id is the first of the ``ids`` that ``POST /sms/{service}/jobs`` answers; the delivery
callback (``PUBLIC_BASE_URL/webhooks/ovh/status?token=…``) reports it as ``id``. OVH has no
idempotency key: a timeout or a 5xx after the request was written is ambiguous.

The clock: OVH refuses a timestamp too far from its own. We use the local clock (kept by NTP on
every machine we run on) rather than asking ``/auth/time`` before each send.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import requests
from django.conf import settings

from notifications.providers._http import request_was_sent, retry_after
from notifications.providers.base import (
    AmbiguousProviderError,
    Message,
    PermanentProviderError,
    Provider,
    ProviderError,
    RateLimitedError,
    SendResult,
    TransientProviderError,
)
from notifications.webhooks import conf

DEFAULT_TIMEOUT = 10.0
STATUS_CALLBACK_PATH = "/webhooks/ovh/status"


def signature(
    *, secret: str, consumer_key: str, method: str, url: str, body: str, timestamp: str
) -> str:
    """OVH's request signature (see the module docstring)."""
    raw = "+".join([secret, consumer_key, method.upper(), url, body, timestamp])
    return "$1$" + hashlib.sha1(raw.encode("utf-8")).hexdigest()  # noqa: S324 - OVH's scheme


class OvhApiError(Exception):
    """An answer from OVH's API that is not a success."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        error_code: str = "",
    ) -> None:
        super().__init__(f"OVH {status}: {message}")
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.error_code = error_code


class OvhMalformedAnswerError(Exception):
    """A 2xx we cannot read: the job may exist."""


class OvhSmsProvider(Provider):
    name = "ovh"
    channel = "sms"
    idempotent = False

    required_options = ("APPLICATION_KEY", "APPLICATION_SECRET", "CONSUMER_KEY", "SMS_SERVICE")

    def check_configuration(self) -> None:
        super().check_configuration()
        self.api_url = (self.options.get("API_URL") or "https://eu.api.ovh.com/1.0").rstrip("/")
        self.timeout = float(self.options.get("TIMEOUT") or DEFAULT_TIMEOUT)
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def status_callback_url(self) -> str:
        """Where OVH reports delivery, or "" when no shared token is configured."""
        token = conf.get("OVH_WEBHOOK_TOKEN")
        if not token:
            return ""
        params = {"token": token}
        if self.alias != self.name:
            params["provider"] = self.alias
        return settings.PUBLIC_BASE_URL.rstrip("/") + STATUS_CALLBACK_PATH + "?" + urlencode(params)

    def payload(self, message: Message) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "receivers": [message.to],
            "message": message.text or message.title,
            "charset": "UTF-8",
            "priority": "high",
            "validityPeriod": 2880,  # minutes OVH keeps trying an unreachable handset
            # The "STOP" mention is for marketing; every other category is sent as is, at once
            # (OVH otherwise holds commercial SMS at night and on Sundays).
            "noStopClause": message.category != "marketing",
        }
        if self.options.get("SENDER"):
            payload["sender"] = self.options["SENDER"]
        else:
            payload["senderForResponse"] = True
        callback = self.status_callback_url()
        if callback:
            payload["callBack"] = callback
        return payload

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """One signed call to OVH's API. Raises requests' errors, OvhApiError, OvhMalformedAnswer."""
        url = self.api_url + path
        body = json.dumps(payload, separators=(",", ":")) if payload is not None else ""
        timestamp = str(int(time.time()))
        headers = {
            "X-Ovh-Application": self.options["APPLICATION_KEY"],
            "X-Ovh-Consumer": self.options["CONSUMER_KEY"],
            "X-Ovh-Timestamp": timestamp,
            "X-Ovh-Signature": signature(
                secret=self.options["APPLICATION_SECRET"],
                consumer_key=self.options["CONSUMER_KEY"],
                method=method,
                url=url,
                body=body,
                timestamp=timestamp,
            ),
            "Accept": "application/json",
        }
        if payload is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        response = self.session.request(
            method, url, data=body.encode("utf-8") or None, headers=headers, timeout=self.timeout
        )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not 200 <= response.status_code < 300:
            message = answer.get("message", "") if isinstance(answer, dict) else response.text
            code = answer.get("errorCode", "") if isinstance(answer, dict) else ""
            raise OvhApiError(
                response.status_code, str(message)[:1000], response.headers, str(code or "")
            )
        if not isinstance(answer, dict):
            raise OvhMalformedAnswerError(f"OVH {response.status_code}: {response.text[:200]!r}")
        return answer

    def send(self, message: Message) -> SendResult:
        path = f"/sms/{quote(self.options['SMS_SERVICE'], safe='')}/jobs"
        try:
            answer = self.call("POST", path, self.payload(message))
        except (requests.RequestException, OvhApiError, OvhMalformedAnswerError) as exc:
            raise self.error_for(exc) from exc
        if message.to in (answer.get("invalidReceivers") or []):
            raise PermanentProviderError(
                f"OVH refused the number {message.to}", code="invalid_number"
            )
        ids = answer.get("ids")
        if not isinstance(ids, list) or not ids:
            raise AmbiguousProviderError(
                f"OVH answered without an SMS id: {answer!r}"[:1000], code="malformed"
            )
        return SendResult(
            provider_message_id=str(ids[0]),
            status="sent",
            cost=_number(answer.get("totalCreditsRemoved")),
            raw={"ids": ids, "valid_receivers": answer.get("validReceivers")},
        )

    def error_for(self, exc: Exception) -> ProviderError:
        """OVH's failures mapped to our classes.

        https://help.ovhcloud.com/csm/en-api-getting-started-ovhcloud-api (signature, 4xx
        errors with a JSON ``message``) and https://eu.api.ovh.com/console/ (``/sms`` section):
        400 refuses the job (bad number, message…), 401/403 our keys or their rights, 404 an
        unknown SMS service, 429 throttling, 5xx OVH's own trouble (the job may exist). A job
        refused for lack of credits is the account's problem, not the message's.
        """
        if isinstance(exc, requests.RequestException):
            if request_was_sent(exc):
                return AmbiguousProviderError(f"OVH did not answer: {exc!r}"[:1000], code="timeout")
            return TransientProviderError(f"OVH unreachable: {exc!r}"[:1000], code="network")
        if isinstance(exc, OvhMalformedAnswerError):
            return AmbiguousProviderError(str(exc), code="malformed")
        if not isinstance(exc, OvhApiError):
            return TransientProviderError(str(exc)[:1000], code="unexpected")
        status, text = exc.status, str(exc)
        if status == 429:
            return RateLimitedError(
                text, code="rate_limited", status_code=status, retry_after=retry_after(exc.headers)
            )
        if status >= 500:
            return AmbiguousProviderError(text, code="provider_error", status_code=status)
        if status in (401, 403):
            return TransientProviderError(text, code="auth", status_code=status)
        if status == 404 or "credit" in exc.message.lower():
            return TransientProviderError(text, code="configuration", status_code=status)
        return PermanentProviderError(text, code="rejected", status_code=status)


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
