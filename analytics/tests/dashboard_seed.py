"""Rollups for the analytics pages' tests and screenshots: a week of sends on four channels, a
template with two variants and a campaign with two steps, written as the rollup task leaves them
(each hour's row, and each day's row the sum of its hours). Data, not mocks."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from analytics.models import (
    HISTOGRAM_SIZE,
    ROLLUP_COUNTS,
    ROLLUP_HISTOGRAMS,
    Granularity,
    Rollup,
)

COUNTERS = ROLLUP_COUNTS
HISTOGRAMS = ROLLUP_HISTOGRAMS
CAMPAIGN = uuid.UUID("0c4e0000-0000-4000-8000-00000000ca11")
STEP_1 = uuid.UUID("5e9a1b2c-0000-4000-8000-000000000001")
STEP_2 = uuid.UUID("7b3f4d5e-0000-4000-8000-000000000002")
TEMPLATE = "spring-sale"


@dataclass(frozen=True)
class Stream:
    """One combination of dimensions and what each of its hours holds."""

    dims: dict[str, Any]
    sent: int
    delivered: float  # rates over sent
    failed: float
    bounced: float
    opened: float
    clicked: float
    price: Decimal
    latency_bucket: int  # where most provider calls fall in the histogram
    errors: float


STREAMS = (
    Stream(
        {"channel": "email", "provider": "sendgrid", "category": "marketing", "template": TEMPLATE,
         "variant": "a"},
        40, 0.95, 0.02, 0.03, 0.30, 0.05, Decimal("0.0008"), 5, 0.02,
    ),
    Stream(
        {"channel": "email", "provider": "sendgrid", "category": "marketing", "template": TEMPLATE,
         "variant": "b"},
        40, 0.95, 0.02, 0.03, 0.40, 0.09, Decimal("0.0008"), 5, 0.02,
    ),
    Stream(
        {"channel": "email", "provider": "mailgun", "category": "alerts", "template": "login-code"},
        25, 0.97, 0.01, 0.01, 0.55, 0.10, Decimal("0.0006"), 4, 0.04,
    ),
    Stream(
        {"channel": "sms", "provider": "twilio", "category": "alerts", "template": "login-code"},
        15, 0.90, 0.06, 0.0, 0.0, 0.0, Decimal("0.0450"), 6, 0.15,
    ),
    Stream(
        {"channel": "push", "provider": "fcm", "category": "alerts"},
        30, 0.92, 0.03, 0.0, 0.20, 0.04, Decimal("0"), 3, 0.01,
    ),
    Stream(
        {"channel": "in_app", "category": "alerts"},
        20, 1.0, 0.0, 0.0, 0.60, 0.12, Decimal("0"), 0, 0.0,
    ),
    Stream(
        {"channel": "email", "provider": "sendgrid", "category": "marketing", "template": TEMPLATE,
         "variant": "a", "campaign_id": CAMPAIGN, "step_id": STEP_1},
        30, 0.96, 0.01, 0.03, 0.25, 0.04, Decimal("0.0008"), 5, 0.02,
    ),
    Stream(
        {"channel": "email", "provider": "sendgrid", "category": "marketing", "template": TEMPLATE,
         "variant": "b", "campaign_id": CAMPAIGN, "step_id": STEP_1},
        30, 0.96, 0.01, 0.03, 0.33, 0.07, Decimal("0.0008"), 5, 0.02,
    ),
    Stream(
        {"channel": "email", "provider": "sendgrid", "category": "marketing",
         "template": "spring-reminder", "campaign_id": CAMPAIGN, "step_id": STEP_2},
        20, 0.96, 0.01, 0.03, 0.20, 0.03, Decimal("0.0008"), 5, 0.02,
    ),
)  # fmt: skip


def hours(now: dt.datetime, days: int = 7) -> list[dt.datetime]:
    """Some hours of each of the last ``days`` UTC days (today's up to the current hour), busier
    in the day than at night."""
    current = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    for back in range(days * 24):
        moment = current - dt.timedelta(hours=back)
        if moment.hour % 3 == 0 or 9 <= moment.hour <= 18:
            out.append(moment)
    return sorted(out)


def _hour_row(stream: Stream, bucket: dt.datetime, scale: int) -> dict[str, Any]:
    sent = stream.sent * scale
    calls = sent if stream.dims.get("provider") else 0
    latency = [0] * HISTOGRAM_SIZE
    if calls:
        latency[stream.latency_bucket] = calls - calls // 5
        latency[stream.latency_bucket + 2] = calls // 5
    opened_unique = round(sent * stream.opened)
    clicked_unique = round(sent * stream.clicked)
    return {
        **stream.dims,
        "bucket": bucket,
        "sent": sent,
        "delivered": round(sent * stream.delivered),
        "failed": round(sent * stream.failed),
        "bounced": round(sent * stream.bounced),
        "complained": 0,
        "opened": opened_unique + opened_unique // 3,
        "opened_unique": opened_unique,
        "machine_opened": opened_unique // 4,
        "clicked": clicked_unique + clicked_unique // 4,
        "clicked_unique": clicked_unique,
        "unsubscribed": sent // 100,
        "provider_calls": calls,
        "provider_errors": round(calls * stream.errors),
        "possibly_duplicate": calls // 40,  # a few sends repeated after a worker crash
        "cost": stream.price * sent,
        "latency_sum_ms": 0.0,
        "latency_hist": latency,
        "queue_wait_hist": [calls] + [0] * (HISTOGRAM_SIZE - 1),
        "api_to_provider_hist": latency,
    }


def seed(now: dt.datetime, *, days: int = 7) -> int:
    """The week of ``STREAMS`` up to ``now``; returns how many rows it wrote."""
    return write(hours(now, days), STREAMS)


def write(buckets: list[dt.datetime], streams: tuple[Stream, ...] | list[Stream]) -> int:
    """Each stream's hour row in each of ``buckets``, and the day rows they add up to."""
    rows: list[Rollup] = []
    days_sum: dict[tuple[Any, ...], dict[str, Any]] = {}
    for bucket in buckets:
        scale = 2 if 9 <= bucket.hour <= 18 else 1
        for stream in streams:
            hour = _hour_row(stream, bucket, scale)
            rows.append(Rollup(granularity=Granularity.HOUR, **hour))
            day = bucket.replace(hour=0)
            key = (day, tuple(sorted(stream.dims.items())))
            total = days_sum.get(key)
            if total is None:
                days_sum[key] = {**hour, "bucket": day}
                continue
            for name in (*COUNTERS, "cost", "latency_sum_ms"):
                total[name] += hour[name]
            for name in HISTOGRAMS:
                total[name] = [a + b for a, b in zip(total[name], hour[name], strict=True)]
    rows += [Rollup(granularity=Granularity.DAY, **total) for total in days_sum.values()]
    Rollup.objects.bulk_create(rows, batch_size=2_000)
    return len(rows)


def bulk(now: dt.datetime, n: int) -> int:
    """About ``n`` hour rows: ten email providers over the hours before ``now`` (and the day
    rows), for the tests that read as many rows as they can."""
    streams = [
        Stream(
            dims={"channel": "email", "provider": f"esp-{j}", "category": "alerts"},
            sent=5,
            delivered=0.9,
            failed=0.05,
            bounced=0.05,
            opened=0.3,
            clicked=0.1,
            price=Decimal("0.001"),
            latency_bucket=4,
            errors=0.05,
        )
        for j in range(10)
    ]
    current = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    buckets = [current - dt.timedelta(hours=h) for h in range(max(1, n // 10))]
    return write(buckets, streams)
