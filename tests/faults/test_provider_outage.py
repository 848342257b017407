"""Scenario 7: the primary email provider goes down for some seconds under a steady stream of
sends. Two workers share the provider's circuit breaker (through Redis): it opens after a few
failures, the sends move to the fallback provider (Mailgun, played by another local server), one
probe at a time reaches the primary while its circuit is open or half-open, the circuit closes once
the primary is back and the sends return to it; every delivery ends terminal.

The breaker's timings are shortened through its settings in the workers' environment (and here,
where the test reads its state)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest
from django.db import connection

from notifications import services
from notifications.providers.registry import provider_breaker
from notifications.services.sweeps import deliveries_sweep
from tests.faults import harness

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.slow,
]

RATE = 10.0  # sends a second
LATENCY = 0.05
OUTAGE = 8.0  # seconds the primary answers 503
THRESHOLD = 3
RESET = 2  # seconds a circuit stays open before a probe


class Sender:
    """Sends one email a ``1 / RATE`` seconds through the send service, in a thread, until
    ``stop()``; ``accepted`` holds the request ids."""

    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        started, n = time.monotonic(), 0
        try:
            while not self.stopped.is_set():
                if (wait := started + n / RATE - time.monotonic()) > 0:
                    time.sleep(wait)
                outcome = services.notification_send(
                    caller="fault-suite",
                    payload={
                        "recipients": [{"email": f"outage{n}@example.com"}],
                        "channels": ["email"],
                        "content": {"subject": f"Outage {n}", "body": "Still arriving."},
                        "priority": "normal",
                    },
                )
                self.accepted.append(outcome.body["request_id"])
                n += 1
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(30)


class BreakerWatch:
    """Reads the primary's circuit every 20 ms: ``changes`` holds ``(time.monotonic(), state)``
    at each change."""

    def __init__(self) -> None:
        self.breaker = provider_breaker("sendgrid")
        self.changes: list[tuple[float, str]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            state = self.breaker.state()
            if not self.changes or self.changes[-1][1] != state:
                self.changes.append((time.monotonic(), state))
            time.sleep(0.02)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


class Both:
    """The two providers as one for the tally: a delivery either accepted twice is a duplicate."""

    def __init__(self, *providers) -> None:
        self.providers = providers

    def duplicates(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for provider in self.providers:
            with provider.lock:
                for delivery_id, n in provider.received.items():
                    total[delivery_id] = total.get(delivery_id, 0) + n
        return {d: n for d, n in total.items() if n > 1}


def run_outage(start_worker, settings, primary, fallback) -> dict:
    """Two workers, the sender, the outage and the recovery; then settles. Returns the times
    and what was counted."""
    prefix = f"f7{uuid.uuid4().hex[:6]}-"
    env = {
        **primary.env(),
        **fallback.env(),
        "EMAIL_PROVIDERS": "sendgrid,mailgun",
        "PROVIDER_BREAKER_THRESHOLD": str(THRESHOLD),
        "PROVIDER_BREAKER_RESET_SECONDS": str(RESET),
        "DELIVERY_RETRY_BASE_SECONDS": "0.5",
        "RATE_LIMITS": "off",
        "CACHE_KEY_PREFIX": prefix,
    }
    # This process reads the workers' breaker (their cache prefix, their timings).
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"]}}
    settings.CACHES["default"]["KEY_PREFIX"] = prefix
    settings.PROVIDER_BREAKER_THRESHOLD = THRESHOLD
    settings.PROVIDER_BREAKER_RESET_SECONDS = RESET
    settings.CELERY_QUEUE_PREFIX = prefix
    start_worker(env, prefix)
    start_worker(env, prefix)
    watch = BreakerWatch()
    sender = Sender()
    time.sleep(3)
    primary.status = 503
    down_at = time.monotonic()
    time.sleep(OUTAGE)
    primary.status = 202
    up_at = time.monotonic()
    time.sleep(6)
    sender.stop()
    settled_in = harness.settle(sender.accepted, 45, deliveries_sweep)
    watch.stop()
    return {
        "changes": watch.changes,
        "down_at": down_at,
        "up_at": up_at,
        "settled_in": settled_in,
        "tally": harness.tally(sender.accepted, Both(primary, fallback)),
    }


def test_provider_outage_moves_to_the_fallback_and_back(start_worker, settings, fault_report):
    primary = harness.FakeSendGrid(latency=LATENCY)
    fallback = harness.FakeMailgun(latency=LATENCY)
    try:
        run = run_outage(start_worker, settings, primary, fallback)
    finally:
        primary.close()
        fallback.close()
    changes, down_at, up_at = run["changes"], run["down_at"], run["up_at"]
    result, settled_in = run["tally"], run["settled_in"]

    opened = [t for t, state in changes if state == "open"]
    assert opened and down_at <= opened[0] <= up_at + RESET, changes
    first_open = opened[0]
    closes = [t for t, state in changes if state == "closed" and t > first_open]
    assert closes, f"the circuit never closed: {changes}"
    closed_at = closes[0]

    # While open or half-open, the primary hears probes only, one at a time.
    probes = sorted(
        (came, left) for came, left, _ in primary.calls if first_open < came < closed_at
    )
    overlapping = sum(1 for a, b in itertools.pairwise(probes) if b[0] < a[1])
    assert overlapping == 0, probes
    assert len(probes) <= (closed_at - first_open) / RESET + 1, (probes, changes)
    # The sends moved to the fallback meanwhile, and came back once the circuit closed.
    during = sum(1 for came, _, status in fallback.calls if first_open < came < closed_at)
    assert during > 0
    back = sum(1 for came, _, status in primary.calls if came > closed_at and status == 202)
    fallback_after = sum(1 for came, _, _ in fallback.calls if came > closed_at + 1)
    assert back > 0
    assert back > fallback_after, (back, fallback_after)
    assert closed_at >= up_at  # closed by a probe the primary answered, not before it was back
    assert result.lost == 0, result.line()
    assert not result.unflagged_duplicates, result.line()

    before_open = sum(1 for c, _, status in primary.calls if c < first_open and status != 202)
    failed_probes = sum(
        1 for c, _, status in primary.calls if first_open < c < closed_at and status != 202
    )
    fault_report(
        f"injected: the primary (SendGrid) answered 503 for {OUTAGE:.0f} s under {RATE:.0f} "
        f"sends/s, two workers, breaker threshold {THRESHOLD}, open {RESET} s",
        f"calls the primary refused: {primary.refused}: {before_open} before its circuit opened "
        f"({first_open - down_at:.1f} s into the outage), then {len(probes)} probes while open "
        f"or half-open ({failed_probes} refused, the last accepted), never two at once",
        f"fallback (Mailgun) calls while the circuit was open: {during}; the circuit closed "
        f"{closed_at - up_at:.1f} s after the primary was back; after that the primary took "
        f"{back} sends, the fallback {fallback_after}",
        f"counted: {result.line()}; all terminal {settled_in} s after the load",
    )
