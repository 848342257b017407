"""Fault scenarios 2 and 6: workers killed under load, and a delivery that kills every worker
that takes it. Real prefork workers (their children are what dies), the real send API on
uvicorn, a provider played with 100 ms of latency that counts every message it accepts."""

from __future__ import annotations

import os
import signal
import time
import uuid

import psutil
import pytest

from conftest import wait_for
from notifications.models import Delivery
from notifications.services import deliveries_sweep
from tests.faults.harness import FakeSendGrid, Load, settle, tally

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.slow]


def email(n: int, to: str = "") -> dict:
    return {
        "recipients": [{"email": to or f"person{n}@example.com"}],
        "channels": ["email"],
        "category": "alerts",
        "content": {"subject": f"Alert {n}", "text": "Something happened."},
    }


@pytest.fixture
def prefix(settings):
    name = f"kill{uuid.uuid4().hex[:6]}-"
    settings.CELERY_QUEUE_PREFIX = name
    settings.DELIVERY_REPUBLISH_SECONDS = 5
    return name


def children(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def test_worker_children_killed_under_load_lose_nothing_and_flag_each_repeat(
    start_live_asgi, start_worker, prefix, make_service_token, fault_report
):
    provider = FakeSendGrid(latency=0.1)
    env = {**provider.env(), "DELIVERY_LEASE_SECONDS": "6"}
    worker = start_worker(env, prefix, pool="prefork", concurrency=4)
    server = start_live_asgi({"CELERY_QUEUE_PREFIX": prefix})
    token = make_service_token("billing", ["notifications:send"])
    load = Load(server.url, token, rate=30, body=email).start()
    kills = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < 25:
            time.sleep(2.5)
            busy = children(worker.pid)
            if busy:
                os.kill(busy[kills % len(busy)], signal.SIGKILL)
                kills += 1
    finally:
        load.stop()
    took = settle(load.accepted, 120, deliveries_sweep)
    counted = tally(load.accepted, provider)
    provider.close()
    fault_report(
        f"injected: kill -9 of a worker child every 2.5 s ({kills} kills) while the API took"
        f" {len(load.accepted)} sends at 30/s, provider latency 100 ms, 4 children",
        f"counted: {counted.line()}; answers {dict(load.statuses)}; settled {took} s after",
    )
    assert kills >= 8 and len(load.accepted) >= 600
    assert load.statuses.get("202", 0) == sum(load.statuses.values())
    assert counted.lost == 0, counted
    # At most the call each kill interrupted is repeated, and each repeat is flagged.
    assert counted.unflagged_duplicates == []
    assert counted.duplicated <= kills


def test_a_poison_delivery_is_dead_lettered_while_other_traffic_flows(
    start_live_asgi, start_worker, prefix, make_service_token, settings, fault_report
):
    """The poison's send kills the worker child each time (a crash point matching its
    address); after DELIVERY_MAX_CRASHES deaths the sweep fails it for good, and the rest of the
    traffic keeps its rate meanwhile."""
    settings.DELIVERY_MAX_CRASHES = 3
    provider = FakeSendGrid(latency=0.02)
    env = {
        **provider.env(),
        "DELIVERY_LEASE_SECONDS": "3",
        "COMMUNICATION_FAULTS": "delivery.before_provider_call=poison@",
    }
    start_worker(env, prefix, pool="prefork", concurrency=2)
    server = start_live_asgi({"CELERY_QUEUE_PREFIX": prefix})
    token = make_service_token("billing", ["notifications:send"])

    def phase(seconds: float, poison: bool) -> tuple[Load, float, str]:
        load = Load(server.url, token, rate=10, body=email)
        mark = time.monotonic()
        load.start()
        poisoned = ""
        if poison:
            sent = Load(server.url, token, rate=1, body=lambda n: email(n, "poison@example.com"))
            sent.start()
            wait_for(lambda: sent.accepted, 10, what="the poison's acceptance")
            sent.stop()
            poisoned = sent.accepted[0]
        deadline = mark + seconds
        while time.monotonic() < deadline:
            deliveries_sweep()
            time.sleep(0.5)
        load.stop()
        return load, mark, poisoned

    _, base_mark, _ = phase(8, poison=False)
    base_sent = sum(1 for t in provider.arrivals if t >= base_mark)
    poisoned_load, mark, poison_request = phase(18, poison=True)
    wait_for(
        lambda: Delivery.objects.filter(
            notification__request_id=poison_request, status="failed"
        ).first(),
        30,
        interval=0.5,
        what="the poison to be dead-lettered",
    )
    settle(poisoned_load.accepted, 60, deliveries_sweep)
    poison = Delivery.objects.get(notification__request_id=poison_request)
    others = tally(poisoned_load.accepted, provider)
    base_rate = base_sent / 8
    # What the other traffic got through while the poison was killing workers: the messages
    # the provider accepted within the phase's own 18 s.
    during = sum(1 for t in provider.arrivals if mark <= t < mark + 18) / 18
    provider.close()
    fault_report(
        "injected: one delivery whose send kills the worker child (os._exit) each time, among"
        " 10 sends/s; DELIVERY_MAX_CRASHES=3, lease 3 s, 2 children",
        f"counted: poison {poison.status} after {poison.attempts} attempts, each a worker"
        f" child's death ({poison.error})",
        f"other traffic: {base_rate:.1f}/s before, {during:.1f}/s during"
        f" ({during / base_rate:.0%}); {others.line()}",
    )
    assert poison.status == "failed" and "worker died" in poison.error
    assert poison.attempts == 3 and provider.received.get(str(poison.id)) is None
    assert others.lost == 0 and others.duplicated == 0
    assert during >= 0.9 * base_rate, (during, base_rate)
