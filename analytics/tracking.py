"""Email open and click tracking: signed links, machine detection, and the events they record.

A tracking token is ``django.core.signing`` output (its own salts, compressed, timestamped) over
the delivery id and, for a click, the URL: nobody can make one for another delivery or another
URL, and it stops being honoured ``TRACKING_TOKEN_MAX_AGE_DAYS`` after it was made (at render
time, i.e. the send). Callers treat it as opaque. Notifications builds the links with
:class:`Links` when it renders an email; the views in
``analytics.views`` read them back with :func:`read_token` and record with
:func:`engagement_record`.

Machines fetch pixels and follow links that no person saw: Apple Mail Privacy Protection
prefetches every image of every message through Apple's proxies, and corporate mail gateways
(Barracuda, Mimecast, Proofpoint, Microsoft Safe Links …) follow links to scan them. Their
opens and clicks are recorded with ``machine=True`` and the reason in ``data.reason``; reports
count them apart from people's. Gmail's image proxy (``GoogleImageProxy``) is counted as a
person: it fetches the images when the recipient opens the message (then caches them), so it
stands for a real open, just not for every repeat of it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.dispatch import Signal

from analytics.events import DELIVERY_DIMENSIONS, record
from analytics.models import Event

_SALT = "analytics.tracking"
# Whitespace and control characters: never in a URL a link can carry as it is.
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
OPEN, CLICK = "open", "click"
# Longer tokens are refused unread (no HMAC over a megabyte of path); a click link whose token
# would be longer is left as it was.
MAX_TOKEN_LENGTH = 4096
MAX_URL_LENGTH = 2000

# The sent event of a delivery is looked up around the token's time (the render, just before
# the provider call): bounded, so that only a partition or two of the event table is read.
_SENT_BEFORE_TOKEN = dt.timedelta(hours=1)
_SENT_AFTER_TOKEN = dt.timedelta(days=2)


@dataclass(frozen=True)
class TrackingToken:
    """What a valid token says."""

    kind: str  # OPEN or CLICK
    delivery_id: uuid.UUID
    issued_at: dt.datetime
    url: str = ""  # a click's destination


# --------------------------------------------------------------------------------- tokens


def click_allowed(url: str) -> bool:
    """Whether ``url`` can be signed as a click's destination: an absolute http(s) URL with a
    host, no whitespace or control characters, of a sensible length."""
    if not url or len(url) > MAX_URL_LENGTH or _UNSAFE.search(url):
        return False
    scheme, sep, rest = url.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and rest[:1] not in ("", "/")


class Links:
    """The tracking URLs of one delivery: an email's links share one signer per kind and one
    read of the settings (rendering signs every link of every tracked email)."""

    def __init__(self, delivery_id: uuid.UUID | str) -> None:
        self.delivery = uuid.UUID(str(delivery_id)).hex
        self.base = settings.PUBLIC_BASE_URL.rstrip("/")
        self._signers: dict[str, signing.TimestampSigner] = {}

    def _sign(self, kind: str, payload: Any) -> str:
        signer = self._signers.get(kind)
        if signer is None:
            signer = self._signers[kind] = signing.TimestampSigner(salt=f"{_SALT}.{kind}")
        return signer.sign_object(payload, compress=True)

    def open_token(self) -> str:
        return self._sign(OPEN, self.delivery)

    def click_token(self, url: str) -> str:
        """Raises ValueError for a URL that cannot be a destination (:func:`click_allowed`)."""
        if not click_allowed(url):
            raise ValueError("only absolute http(s) URLs can be tracked")
        token = self._sign(CLICK, [self.delivery, url])
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError("the URL is too long to be tracked")
        return token

    def open_url(self) -> str:
        """The open pixel's absolute URL."""
        return f"{self.base}/t/o/{self.open_token()}.gif"

    def click_url(self, url: str) -> str:
        """The tracked link to ``url``. Raises ValueError for a URL that cannot be a
        destination (:func:`click_allowed`): the caller leaves that link as it is."""
        return f"{self.base}/t/c/{self.click_token(url)}"


def read_token(token: str, kind: str) -> TrackingToken | None:
    """The token's content, or None when it is not one of ours for ``kind`` (tampered, made
    for the other kind, expired, or garbage)."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    try:
        payload = signing.loads(
            token,
            salt=f"{_SALT}.{kind}",
            max_age=dt.timedelta(days=settings.TRACKING_TOKEN_MAX_AGE_DAYS),
        )
        # TimestampSigner's layout is value:timestamp:signature; the signature covered both.
        issued = signing.b62_decode(token.rsplit(":", 2)[1])
        if kind == CLICK:
            delivery_hex, url = payload
            if not isinstance(url, str) or not click_allowed(url):
                return None
        else:
            delivery_hex, url = payload, ""
        delivery_id = uuid.UUID(hex=delivery_hex)
    except (signing.BadSignature, ValueError, TypeError, IndexError, AttributeError):
        return None
    return TrackingToken(
        kind=kind,
        delivery_id=delivery_id,
        issued_at=dt.datetime.fromtimestamp(issued, tz=dt.UTC),
        url=url,
    )


# ------------------------------------------------------------------------------- machines

# Apple's own network: Mail Privacy Protection's prefetch proxies fetch from it.
APPLE_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
# The proxy's user agent is this bare string (Apple Mail itself sends a full one).
APPLE_PROXY_USER_AGENT = "mozilla/5.0"
# Substrings of a lower-cased user agent → the reason recorded. Mail security gateways first.
SCANNERS = (
    ("barracuda", "scanner:barracuda"),
    ("mimecast", "scanner:mimecast"),
    ("proofpoint", "scanner:proofpoint"),
    ("bingpreview", "scanner:microsoft"),  # Microsoft Safe Links and Outlook's link preview
    ("safelinks", "scanner:microsoft"),
    ("symantec", "scanner:symantec"),
    ("messagelabs", "scanner:symantec"),
    ("forcepoint", "scanner:forcepoint"),
    ("trendmicro", "scanner:trendmicro"),
    ("ironport", "scanner:cisco"),
    ("fortiguard", "scanner:fortinet"),
    ("sophos", "scanner:sophos"),
    ("zscaler", "scanner:zscaler"),
    ("vadesecure", "scanner:vade"),
)
BOTS = (
    "bot",
    "crawler",
    "spider",
    "slurp",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww-perl",
    "apache-httpclient",
    "headlesschrome",
    "phantomjs",
    "scrapy",
)


def machine_reason(*, user_agent: str, ip: str = "", method: str = "GET") -> str:
    """Why this open or click looks made by a machine, or "" for a person."""
    if method.upper() == "HEAD":
        return "head_request"  # a person's mail client or browser asks for the body
    agent = " ".join(user_agent.split()).lower()
    if agent == APPLE_PROXY_USER_AGENT or _in(ip, APPLE_NETWORKS):
        return "apple_mpp"
    if not agent:
        return "no_user_agent"
    for needle, reason in SCANNERS:
        if needle in agent:
            return reason
    for needle in BOTS:
        if needle in agent:
            return "bot"
    return ""


def _in(ip: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return False
    return any(address in network for network in networks)


# -------------------------------------------------------------------------------- recording

# A person's open or click (never a machine's), sent with ``delivery_id``, ``notification_id``
# (None when the sent event was not found) and ``kind`` inside the transaction that records it:
# notifications stops the notification's escalation there (analytics imports no other app, so
# the app that cares listens).
engaged = Signal()


def engagement_record(
    token: TrackingToken, *, machine_reason: str = "", user_agent: str = ""
) -> Event:
    """Records the open or click a valid token stands for, with the dimensions of its
    delivery's ``sent`` event (template, variant, provider, campaign …: one indexed read, in
    the partitions around the token's time). A delivery whose sent event is not there (the
    worker had not yet written it) is recorded under its id alone."""
    sent = (
        Event.objects.filter(
            delivery_id=token.delivery_id,
            type="sent",
            occurred_at__gte=token.issued_at - _SENT_BEFORE_TOKEN,
            occurred_at__lt=token.issued_at + _SENT_AFTER_TOKEN,
        )
        .order_by("occurred_at")
        .values(*DELIVERY_DIMENSIONS)
        .first()
    ) or {"delivery_id": token.delivery_id}
    data: dict[str, Any] = {}
    if token.url:
        data["url"] = token.url
    if machine_reason:
        data["reason"] = machine_reason
    agent = user_agent.replace("\x00", "")[:300]  # jsonb refuses NUL
    if agent:
        data["user_agent"] = agent
    with transaction.atomic():
        event = record(
            "opened" if token.kind == OPEN else "clicked",
            machine=bool(machine_reason),
            data=data,
            **sent,
        )
        if not machine_reason:
            engaged.send(
                sender=Event,
                delivery_id=token.delivery_id,
                notification_id=sent.get("notification_id"),
                kind=token.kind,
            )
    return event
