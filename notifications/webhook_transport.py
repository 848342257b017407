"""How an outbound webhook travels: its secret and signature (Standard Webhooks), the address
check that keeps requests off private networks (SSRF), and the POST pinned to the checked
address. ``notifications.services.webhooks`` decides what to send and when."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import ipaddress
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
RESPONSE_CAP_BYTES = 4096


class UrlNotAllowedError(Exception):
    """A URL whose host is, or resolves to, an address webhooks may not reach."""


# --------------------------------------------------------------------------- secrets, signing


def secret_new() -> str:
    """A new signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed with the decoded secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signing_secrets(endpoint: Any, now: dt.datetime | None = None) -> list[str]:
    """The secrets that sign a request now: the current one, and the previous one during the
    rotation overlap."""
    now = now or timezone.now()
    found = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > now:
        found.append(endpoint.previous_secret)
    return found


# --------------------------------------------------------------------------- SSRF


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def resolve(host: str, port: int) -> str:
    """The address to connect to for ``host``: every address it resolves to must be public
    (unless ``WEBHOOKS_ALLOW_PRIVATE``), and the caller connects to the one checked here, so a
    DNS answer that changes between check and connect cannot move the request."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UrlNotAllowedError(f"{host} does not resolve") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise UrlNotAllowedError(f"{host} does not resolve")
    if not settings.WEBHOOKS_ALLOW_PRIVATE:
        refused = [a for a in addresses if not _address_allowed(a)]
        if refused:
            raise UrlNotAllowedError(f"{host} resolves to a non-public address ({refused[0]})")
    return addresses[0]


def url_parts(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlNotAllowedError("only http and https URLs with a host")
    if parts.username or parts.password:
        raise UrlNotAllowedError("credentials in the URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, path


@dataclass
class Answer:
    status: int | None
    latency_ms: int
    error: str = ""


def post(url: str, headers: dict[str, str], body: bytes) -> Answer:
    """POSTs ``body`` to ``url``, connected to the address :func:`resolve` checked; redirects
    are not followed (a 3xx is a failure), the answer's body is read up to a cap."""
    started = time.monotonic()

    def answer(status: int | None, error: str = "") -> Answer:
        return Answer(status, int((time.monotonic() - started) * 1000), error[:500])

    try:
        scheme, host, port, path = url_parts(url)
        address = resolve(host, port)
    except (UrlNotAllowedError, ValueError) as exc:
        return answer(None, f"not allowed: {exc}")
    timeout = settings.WEBHOOKS_TIMEOUT_SECONDS
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = _PinnedHTTPS(host, port, address, timeout)
    else:
        conn = _PinnedHTTP(host, port, address, timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(RESPONSE_CAP_BYTES)
        return answer(response.status)
    except (OSError, http.client.HTTPException) as exc:
        return answer(None, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to ``address`` (checked) while the request names ``host``."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """As :class:`_PinnedHTTP`, the certificate checked against ``host``."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]  # set by HTTPSConnection
