"""Worker and beat heartbeats in Redis, so an operator sees a dead worker or beat.

Each process starts a daemon thread on ``worker_ready`` / ``beat_init`` that writes the current time
under ``heartbeat:<kind>:<hostname>`` every ``HEARTBEAT_INTERVAL`` seconds (expiring after a day).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import redis
from celery import signals
from django.conf import settings

logger = logging.getLogger(__name__)

KINDS = ("worker", "beat", "roundtrip")


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def _key(kind: str, name: str) -> str:
    return f"heartbeat:{kind}:{name}"


def beat_once(kind: str, name: str, client: redis.Redis | None = None) -> None:
    (client or _client()).set(_key(kind, name), f"{time.time():.3f}", ex=86400)


def _run(kind: str, name: str) -> None:
    client = _client()
    while True:
        try:
            beat_once(kind, name, client)
        except redis.RedisError as exc:
            logger.warning("heartbeat not written", extra={"kind": kind, "error": str(exc)})
        time.sleep(settings.HEARTBEAT_INTERVAL)


def _start(kind: str, name: str) -> None:
    threading.Thread(target=_run, args=(kind, name), name=f"heartbeat-{kind}", daemon=True).start()


@signals.worker_ready.connect
def _worker_ready(sender=None, **kwargs):
    _start("worker", getattr(sender, "hostname", None) or socket.gethostname())


@signals.beat_init.connect
def _beat_init(sender=None, **kwargs):
    _start("beat", socket.gethostname())


def ages(client: redis.Redis | None = None) -> dict[str, dict]:
    """``{"worker": {"alive": n, "age_seconds": youngest, "ok": bool}, "beat": {...}}``."""
    client = client or _client()
    now = time.time()
    out = {}
    for kind in KINDS:
        keys = list(client.scan_iter(match=_key(kind, "*"), count=100))
        values = [float(v) for v in client.mget(keys) if v] if keys else []
        age = round(now - max(values), 1) if values else None
        out[kind] = {
            # Processes heard from within HEARTBEAT_STALE_AFTER (older keys expire in a day).
            "alive": sum(1 for v in values if now - v < settings.HEARTBEAT_STALE_AFTER),
            "age_seconds": age,
            "ok": age is not None and age < settings.HEARTBEAT_STALE_AFTER,
        }
    return out
