"""The per-provider token bucket (``notifications.providers.ratelimit``) is one bucket for every
worker on every machine: it keeps time by Redis's clock, so workers whose clocks disagree share
it as they would with one clock."""

from __future__ import annotations

import time
import uuid

from notifications.providers import ratelimit
from notifications.providers.outbox import OutboxProvider


def test_a_worker_whose_clock_lags_shares_the_bucket_as_the_others_do(monkeypatch):
    provider = OutboxProvider(f"skew-{uuid.uuid4().hex[:6]}", {"RATE_PER_SECOND": 10, "BURST": 10})
    assert ratelimit.acquire(provider) == 0  # a worker on a machine with the right time
    # Another machine, its clock 2 s behind: the bucket still holds 9 of its 10 tokens.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 2.0)
    assert [ratelimit.acquire(provider) for _ in range(9)] == [0] * 9
    # The tenth of the burst taken, the next waits its turn (a tenth of a second), wherever.
    assert 0 < ratelimit.acquire(provider) <= 0.11
    monkeypatch.setattr(time, "time", real)
    assert 0 < ratelimit.acquire(provider) <= 0.21
