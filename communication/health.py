"""Readiness checks: PostgreSQL, Redis and the Celery broker, each with its latency."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from kombu import Connection

from communication import heartbeat


def _timed(check: Callable[[], object]) -> dict[str, object]:
    started = time.perf_counter()
    result: dict[str, object]
    try:
        check()
        result = {"ok": True}
    except Exception as exc:  # a check reports any failure; it never raises
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def check_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)


def readiness() -> tuple[bool, dict]:
    checks = {
        "database": _timed(check_database),
        "redis": _timed(check_redis),
        "broker": _timed(check_broker),
    }
    body: dict = {"status": "ok", "checks": checks}
    failing = [name for name, c in checks.items() if not c["ok"]]
    if failing:
        body["status"] = "fail"
        body["failing"] = failing
    if checks["redis"]["ok"]:
        try:
            body["heartbeats"] = heartbeat.ages()
        except redis.RedisError:
            pass
    return not failing, body
