"""Fault scenario 4: PostgreSQL unreachable under load.

A real uvicorn and a real Celery worker reach the test database through ``FaultProxy``; a load
of sends runs at a steady rate while the proxy goes down for a few seconds and comes back. While
it is down every answer is ``503 unavailable`` with ``Retry-After`` (never a 500), and quickly;
every accepted send ends terminal; web and worker reconnect by themselves.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import wait_for
from notifications.services.sweeps import deliveries_sweep
from tests.faults.harness import (
    FakeSendGrid,
    FaultProxy,
    Load,
    database_target,
    database_url_through,
    percentile,
    settle,
    tally,
)

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.slow,
]

RATE = 20  # sends per second
DOWN_FOR = 6.0  # seconds


def body(n: int) -> dict:
    return {
        "recipients": [{"email": f"outage{n}@example.com"}],
        "category": "alerts",
        "channels": ["email"],
        "content": {"subject": "Outage", "body": f"Message {n}."},
    }


@pytest.fixture
def proxy():
    proxy = FaultProxy(database_target())
    yield proxy
    proxy.close()


@pytest.fixture
def provider():
    provider = FakeSendGrid()
    yield provider
    provider.close()


def ready_status(url: str) -> tuple[int, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{url}/health/ready", timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.monotonic() - started


def test_database_outage_answers_503_and_recovers(
    proxy, provider, start_live_asgi, start_worker, make_service_token, settings, fault_report
):
    prefix = f"dbd{uuid.uuid4().hex[:6]}-"
    env = {
        "DATABASE_URL": database_url_through(proxy),
        **provider.env(),
        "CACHE_KEY_PREFIX": prefix,
        # A delivery the cut caught in the middle of its send goes back to the sweep after this
        # lease, not the default minute: the scenario settles within its time budget.
        "DELIVERY_LEASE_SECONDS": "5",
    }
    worker = start_worker(env, prefix)
    server = start_live_asgi({**env, "CELERY_QUEUE_PREFIX": prefix})
    settings.CELERY_QUEUE_PREFIX = prefix
    # The sweep's horizon for a lost publish stays far away: a task the worker took while the
    # database was down comes back by itself (deliver_many retries an outage).
    settings.DELIVERY_REPUBLISH_SECONDS = 300
    load = Load(server.url, make_service_token(), RATE, body).start()
    try:
        wait_for(lambda: len(load.accepted) >= RATE, 30, what="sends accepted before the fault")

        proxy.down()
        down_at = time.monotonic()
        time.sleep(1)
        ready_down, ready_down_s = ready_status(server.url)
        live_down = urllib.request.urlopen(f"{server.url}/health/live", timeout=5).status
        time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - down_at)))
        proxy.up()
        up_at = time.monotonic()

        def accepted_again() -> float | None:
            after = [a for a in load.answers if a.sent_at >= up_at and a.status == "202"]
            return after[0].sent_at + after[0].latency - up_at if after else None

        web_recovered_s = wait_for(accepted_again, 30, what="a send accepted after the outage")
        first_after = len(load.accepted) - 1
        # The worker reconnects by itself: the first send accepted after the outage reaches the
        # provider with no sweep run.
        worker_recovered_s = wait_for(
            lambda: (
                tally(load.accepted[first_after : first_after + 1], provider).terminal == 1
                and time.monotonic() - up_at
            ),
            30,
            interval=0.05,
            what="the worker sending the first send accepted after the outage",
        )
        time.sleep(1)
    finally:
        load.stop()

    after_up = load.accepted[first_after:]
    wait_for(
        lambda: tally(after_up, provider).terminal == len(after_up),
        30,
        what="the worker sending every send accepted after the outage, without a sweep",
    )
    assert worker.proc.poll() is None, "the worker died"
    ready_after, _ = ready_status(server.url)

    settle_s = settle(load.accepted, 60, deliveries_sweep)
    counted = tally(load.accepted, provider)

    while_down = [a for a in load.answers if down_at <= a.sent_at and a.sent_at + a.latency < up_at]
    down_p99 = percentile([a.latency for a in while_down], 0.99)
    fault_report(
        f"injected: PostgreSQL unreachable (FaultProxy down) for {DOWN_FOR:.0f} s under "
        f"{RATE} sends/s; answers {dict(load.statuses)}",
        f"while down: {len(while_down)} answers, "
        f"{sum(1 for a in while_down if a.status == '503')} 503 unavailable, "
        f"p50 {percentile([a.latency for a in while_down], 0.5) * 1000:.0f} ms, "
        f"p99 {down_p99 * 1000:.0f} ms; /health/ready {ready_down} in {ready_down_s:.2f} s, "
        f"/health/live {live_down}",
        f"recovered (after the server was back): web accepting in {web_recovered_s:.1f} s, "
        f"worker sending in {worker_recovered_s:.1f} s (no sweep); all settled in {settle_s} s",
        counted.line(),
    )

    assert "500" not in load.statuses and "error" not in load.statuses, load.statuses
    assert while_down, "no answer fell inside the outage"
    wrong = [a for a in while_down if (a.status, a.code) != ("503", "unavailable")]
    assert not wrong, wrong
    assert all(a.retry_after and int(a.retry_after) >= 1 for a in while_down)
    # Generous: well under the pool's own wait (DB_POOL_TIMEOUT, 10 s), which it used to take.
    assert down_p99 < 5, f"p99 while down {down_p99:.2f} s"
    assert ready_down == 503 and ready_down_s < 5
    assert live_down == 200 and ready_after == 200
    assert counted.lost == 0 and counted.terminal == counted.deliveries == counted.accepted
