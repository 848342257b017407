"""Messaging settings: ``settings.MESSAGING_*`` when the project sets them, else the environment
(django-environ), else the defaults below. Read at call time so tests can override them."""

from __future__ import annotations

import functools
import os

import environ
from django.conf import settings

_env = environ.Env()

DEFAULTS: dict[str, tuple[type, object]] = {
    # Seconds after sending during which the author may edit a message.
    "MESSAGING_EDIT_WINDOW_SECONDS": (int, 15 * 60),
    "MESSAGING_MAX_CONTENT_LENGTH": (int, 10_000),
    "MESSAGING_PAGE_SIZE": (int, 50),
    "MESSAGING_MAX_PAGE_SIZE": (int, 200),
    "MESSAGING_MAX_PARTICIPANTS": (int, 500),
    # End-to-end encryption: how many devices' public keys one user may publish.
    "MESSAGING_MAX_DEVICE_KEYS": (int, 20),
    # Attachments: size limit, storage alias (settings.STORAGES), link lifetime, allow-list.
    "MESSAGING_ATTACHMENT_MAX_BYTES": (int, 10 * 1024 * 1024),
    "MESSAGING_ATTACHMENT_STORAGE": (str, "default"),
    "MESSAGING_ATTACHMENT_LINK_SECONDS": (int, 3600),
    # Width x height x frames an image may declare; anything larger is refused before decoding.
    "MESSAGING_ATTACHMENT_MAX_PIXELS": (int, 40_000_000),
    # Images each web process decodes at once, and how many more may wait (beyond: 503 busy).
    "MESSAGING_IMAGE_WORKERS": (int, 2),
    "MESSAGING_IMAGE_QUEUE": (int, 2),
    "MESSAGING_THUMBNAIL_SIZE": (int, 320),
    "MESSAGING_ATTACHMENT_TYPES": (
        list,
        [
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/webp",
            "application/pdf",
            "audio/mpeg",
            "audio/ogg",
            "video/mp4",
            "video/webm",
        ],
    ),
    # Presence: a socket's heartbeat is renewed every HEARTBEAT seconds and expires after TTL.
    "MESSAGING_PRESENCE_HEARTBEAT_SECONDS": (int, 20),
    "MESSAGING_PRESENCE_TTL_SECONDS": (int, 60),
    "MESSAGING_PRESENCE_PREFIX": (str, "comm:presence"),
    # Redis connections each web process's event loop uses for presence (callers queue beyond).
    "MESSAGING_PRESENCE_MAX_CONNECTIONS": (int, 32),
    # Typing: a start not renewed within this many seconds is followed by "stopped".
    "MESSAGING_TYPING_TIMEOUT_SECONDS": (float, 5.0),
    # Offline notification: wait this long after the first message of a burst, then send one
    # notification covering every message of the burst.
    "MESSAGING_NOTIFY_DELAY_SECONDS": (float, 30.0),
    # The offline notification escalates: in-app at once, then push and email this long after
    # (30s, 10m, 1h, 2d or ISO 8601; empty leaves the channel out) unless the conversation is
    # read first, which cancels what is still pending.
    "MESSAGING_NOTIFY_PUSH_AFTER": (str, "1m"),
    "MESSAGING_NOTIFY_EMAIL_AFTER": (str, "1h"),
    # Where a notification about new messages links to ("{conversation_id}" is replaced).
    "MESSAGING_CONVERSATION_URL": (str, ""),
    # A websocket message.send: its recipients get it as soon as it is committed, and the
    # sender's ack waits until it is on disk. False: the recipients wait for the disk too (a
    # crash in that moment, which loses the message and the sender's ack, can then not have shown
    # it to anyone).
    "MESSAGING_DELIVER_BEFORE_FLUSH": (bool, True),
    # Admission control of websocket message.send, per process (messaging.admission): sends
    # running at once (a process carries at most this many per send's duration, so too few
    # caps its throughput, too many only lengthen every send: twice DB_ASYNC_POOL_MAX_SIZE),
    # sends that may wait for one of them to end, and how long (seconds); past that a send is
    # answered "overloaded" with this retry_after (seconds).
    "MESSAGING_WS_MAX_INFLIGHT": (int, 8),
    "MESSAGING_WS_MAX_QUEUED": (int, 8),
    "MESSAGING_WS_QUEUE_WAIT": (float, 0.05),
    "MESSAGING_WS_RETRY_AFTER": (float, 1.0),
}


def get(name: str):
    if hasattr(settings, name):
        return getattr(settings, name)
    value = _from_env(name, os.environ.get(name))
    return list(value) if isinstance(value, list) else value


@functools.lru_cache(maxsize=512)
def _from_env(name: str, raw: str | None):
    """Parsed once per name and raw value (a changed variable is parsed again)."""
    cast, default = DEFAULTS[name]
    if cast is list:
        return _env.list(name, default=default)
    return _env.get_value(name, cast=cast, default=default)
