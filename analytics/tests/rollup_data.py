"""Rollup rows written directly, as the rollup task would leave them: data, not mocks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from analytics.models import (
    HISTOGRAM_SIZE,
    ROLLUP_COUNTS,
    ROLLUP_DIMENSIONS,
    ROLLUP_HISTOGRAMS,
    Granularity,
    Rollup,
)

UTC = dt.UTC


def at(day: int, hour: int = 0, month: int = 3) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, tzinfo=UTC)


def hist(**buckets: int) -> list[int]:
    """A histogram with ``b<i>=count`` in bucket i."""
    out = [0] * HISTOGRAM_SIZE
    for name, count in buckets.items():
        out[int(name[1:])] = count
    return out


def row(bucket: dt.datetime, granularity: str = Granularity.HOUR, **kw: Any) -> Rollup:
    kw.setdefault("latency_hist", [0] * HISTOGRAM_SIZE)
    kw.setdefault("queue_wait_hist", [0] * HISTOGRAM_SIZE)
    kw.setdefault("api_to_provider_hist", [0] * HISTOGRAM_SIZE)
    if "cost" in kw:
        kw["cost"] = Decimal(kw["cost"])
    return Rollup(granularity=granularity, bucket=bucket, **kw)


def hour_and_day(bucket: dt.datetime, **kw: Any) -> list[Rollup]:
    """The hour row and the day row it alone makes (the day of a single busy hour)."""
    day = bucket.replace(hour=0)
    return [row(bucket, Granularity.HOUR, **kw), row(day, Granularity.DAY, **kw)]


DIMS = ROLLUP_DIMENSIONS
COUNTERS = (*ROLLUP_COUNTS, "cost", "latency_sum_ms")
HISTOGRAMS = ROLLUP_HISTOGRAMS


def with_days(hours: list[Rollup]) -> list[Rollup]:
    """``hours`` and the day rows the rollup task makes of them: per UTC day and dimensions,
    the sums of the hours (histograms element-wise)."""
    days: dict[tuple, Rollup] = {}
    for hour in hours:
        key = (hour.bucket.date(), *(getattr(hour, d) for d in DIMS))
        day = days.get(key)
        if day is None:
            day = days[key] = row(
                hour.bucket.replace(hour=0), Granularity.DAY, **{d: getattr(hour, d) for d in DIMS}
            )
        for name in COUNTERS:
            setattr(day, name, getattr(day, name) + getattr(hour, name))
        for name in HISTOGRAMS:
            setattr(
                day,
                name,
                [a + b for a, b in zip(getattr(day, name), getattr(hour, name), strict=True)],
            )
    return hours + list(days.values())


def save(rows: list[Rollup]) -> list[Rollup]:
    return Rollup.objects.bulk_create(rows, batch_size=1000)
