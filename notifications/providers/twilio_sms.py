"""Twilio (SMS, primary) with the real ``twilio`` client.

The client hard-codes ``https://api.twilio.com``: :class:`ApiUrlHttpClient` sends its requests to
``TWILIO_API_URL`` instead (a proxy, or the local server of the tests). Twilio has no idempotency
key for Messages: a timeout or a 5xx after the request was written may have sent the SMS, so it is
:class:`AmbiguousProviderError` and the pipeline does not resend it by default.

The status callback URL is ``PUBLIC_BASE_URL/webhooks/twilio/status`` (with ``?provider=<alias>``
for an alias other than ``twilio``); :meth:`TwilioSmsProvider.verify_callback` checks the
``X-Twilio-Signature`` of what arrives there, so that the SDK stays inside this package.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

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

DEFAULT_TIMEOUT = 10.0
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
# api.twilio.com, or a regional/edge host such as api.dublin.ie1.twilio.com (TWILIO_REGION/EDGE).
_TWILIO_HOST = re.compile(r"^https://api(\.[a-z0-9-]+)*\.twilio\.com(?=/|$)")

# https://www.twilio.com/docs/api/errors — error codes that say "this number, never":
OPTED_OUT = 21610  # the recipient replied STOP
INVALID_NUMBER_CODES = frozenset(
    {
        21211,  # invalid 'To' phone number
        21214,  # 'To' phone number cannot be reached
        21217,  # phone number does not appear to be valid
        21407,  # this phone number type does not support SMS
        21421,  # phone number is invalid
        21612,  # 'To' number is not currently reachable via SMS
        21614,  # 'To' number is not a valid mobile number
    }
)
# Codes about the message or our account that retrying will not change.
REFUSED_MESSAGE_CODES = frozenset(
    {
        21602,  # message body is required
        21617,  # body exceeds the 1600 character limit
        30007,  # message filtered by the carrier
    }
)


class ApiUrlHttpClient(TwilioHttpClient):
    """Twilio's own HTTP client, pointed at ``api_url`` instead of Twilio's hosts.

    It also keeps the last answer's headers per thread (``Retry-After`` on a 429), which
    ``TwilioRestException`` does not carry.
    """

    def __init__(self, api_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.api_url = api_url.rstrip("/")
        self._last = threading.local()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self.api_url:
            url = _TWILIO_HOST.sub(self.api_url, url, count=1)
        self._last.headers = {}
        response = super().request(method, url, *args, **kwargs)
        self._last.headers = response.headers or {}
        return response

    @property
    def last_headers(self) -> dict[str, str]:
        return getattr(self._last, "headers", {}) or {}


class TwilioSmsProvider(Provider):
    name = "twilio"
    channel = "sms"
    idempotent = False

    required_options = ("ACCOUNT_SID", "AUTH_TOKEN", "FROM")

    def check_configuration(self) -> None:
        super().check_configuration()
        self.http_client = ApiUrlHttpClient(
            self.options.get("API_URL") or "",
            timeout=float(self.options.get("TIMEOUT") or DEFAULT_TIMEOUT),
        )
        self.client = Client(
            username=self.options["ACCOUNT_SID"],
            password=self.options["AUTH_TOKEN"],
            account_sid=self.options["ACCOUNT_SID"],
            # TWILIO_REGION / TWILIO_EDGE in the environment change the host the client builds;
            # the rewrite in ApiUrlHttpClient covers those hosts too.
            http_client=self.http_client,
        )

    def status_callback_url(self) -> str:
        url = settings.PUBLIC_BASE_URL.rstrip("/") + STATUS_CALLBACK_PATH
        if self.alias != self.name:
            url += "?" + urlencode({"provider": self.alias})
        return url

    def send(self, message: Message) -> SendResult:
        sender = self.options["FROM"]
        params = {
            "to": message.to,
            "body": message.text or message.title,
            "status_callback": self.status_callback_url(),
        }
        # A Messaging Service picks the sender itself; otherwise FROM is a number or a name.
        if sender.startswith("MG"):
            params["messaging_service_sid"] = sender
        else:
            params["from_"] = sender
        try:
            created = self.client.messages.create(**params)
        except (TwilioException, requests.RequestException, ValueError) as exc:
            raise self.error_for(exc) from exc
        if not getattr(created, "sid", None):
            raise AmbiguousProviderError("Twilio answered without a message sid", code="malformed")
        return SendResult(
            provider_message_id=created.sid,
            status="sent",
            raw={"status": created.status, "num_segments": created.num_segments},
        )

    def error_for(self, exc: Exception) -> ProviderError:
        """Twilio's failures mapped to our classes.

        https://www.twilio.com/docs/usage/twilios-response (HTTP statuses),
        https://www.twilio.com/docs/api/errors (error codes: 20429 too many requests, 21610
        opted out, 21211/21614 … invalid numbers), and
        https://www.twilio.com/docs/usage/api/api-timeouts — a 5xx or a timeout does not say
        whether the message was created, and Messages has no idempotency key: ambiguous.
        """
        if isinstance(exc, requests.RequestException):
            if request_was_sent(exc):
                return AmbiguousProviderError(
                    f"Twilio did not answer: {exc!r}"[:1000], code="timeout"
                )
            return TransientProviderError(f"Twilio unreachable: {exc!r}"[:1000], code="network")
        if isinstance(exc, ValueError):
            # A 2xx whose body is not the JSON Twilio sends: the message may well exist.
            return AmbiguousProviderError(
                f"unreadable Twilio answer: {exc}"[:1000], code="malformed"
            )
        status = getattr(exc, "status", None)
        code = getattr(exc, "code", None)
        try:
            code = int(code) if code is not None else None
        except (TypeError, ValueError):
            code = None
        text = (getattr(exc, "msg", "") or str(exc))[:1000]
        if not isinstance(exc, TwilioRestException) and status is None:
            return TransientProviderError(text, code="client_error")
        if code == OPTED_OUT:
            return PermanentProviderError(
                text, code="unsubscribe", suppress=True, status_code=status
            )
        if code in INVALID_NUMBER_CODES:
            return PermanentProviderError(text, code="invalid_number", status_code=status)
        if status == 429 or code == 20429:
            return RateLimitedError(
                text,
                code="rate_limited",
                status_code=status,
                retry_after=retry_after(self.http_client.last_headers),
            )
        if status is not None and status >= 500:
            return AmbiguousProviderError(text, code="provider_error", status_code=status)
        if status in (401, 403):
            return TransientProviderError(text, code="auth", status_code=status)
        if code in REFUSED_MESSAGE_CODES or (status is not None and 400 <= status < 500):
            return PermanentProviderError(text, code=f"twilio_{code or status}", status_code=status)
        return AmbiguousProviderError(text, code="unexpected", status_code=status)

    def verify_callback(self, url: str, params: Mapping[str, str], signature: str) -> bool:
        """Whether ``signature`` (``X-Twilio-Signature``) signs ``url`` and ``params``.

        ``url`` must be the URL as Twilio called it (scheme, host and query included), i.e. as
        seen in front of any proxy: https://www.twilio.com/docs/usage/webhooks/webhooks-security
        """
        if not signature:
            return False
        return bool(RequestValidator(self.options["AUTH_TOKEN"]).validate(url, params, signature))
