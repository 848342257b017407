"""Small helpers the HTTP providers share: was a failed request sent, and how long to wait."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import requests
import urllib3.exceptions

# Failures that happen before a single byte of the request left this machine: nothing can have
# reached the provider, so even a provider without idempotency may be called again.
_NOT_SENT = (
    urllib3.exceptions.NewConnectionError,  # connection refused, DNS failure (a subclass)
    urllib3.exceptions.ConnectTimeoutError,
)


def request_was_sent(exc: requests.RequestException) -> bool:
    """Whether the request behind ``exc`` may have reached the server.

    ``requests`` wraps a refused connection and a connection reset mid-answer in the same
    ``ConnectionError``; the cause inside tells them apart.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return False
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    if isinstance(reason, _NOT_SENT) or isinstance(cause, _NOT_SENT):
        return False
    # ReadTimeout, "Connection aborted" (RemoteDisconnected), ChunkedEncodingError …: the request
    # was written, the answer was lost.
    return True


def retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    value = (headers or {}).get("Retry-After")
    if not value:
        return None
    value = str(value).strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(when.timestamp() - (now if now is not None else time.time()), 0.0)
