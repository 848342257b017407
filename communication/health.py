"""Readiness checks: PostgreSQL, Redis and the Celery broker, each with its latency.

The checks run side by side on threads of their own, and the answer waits at most
``HEALTH_CHECK_TIMEOUT`` for them: a server that hangs (PostgreSQL unreachable, say) makes its
check fail with a timeout, never the probe itself hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures

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
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # this thread's connection (back to the pool, in the web process)


def check_redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def check_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)


# Bounded: checks stuck on a hung server hold their threads, and later probes then time out too.
_executor = futures.ThreadPoolExecutor(max_workers=6, thread_name_prefix="health")
CHECKS: dict[str, Callable[[], object]] = {
    "database": check_database,
    "redis": check_redis,
    "broker": check_broker,
}


def readiness() -> tuple[bool, dict]:
    timeout = settings.HEALTH_CHECK_TIMEOUT
    running = {name: _executor.submit(_timed, check) for name, check in CHECKS.items()}
    futures.wait(running.values(), timeout=timeout)
    checks: dict[str, dict[str, object]] = {}
    for name, future in running.items():
        if future.done():
            checks[name] = future.result()
        else:
            future.cancel()
            error = f"no answer in {timeout}s"
            checks[name] = {"ok": False, "error": error, "latency_ms": round(timeout * 1000, 2)}
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
