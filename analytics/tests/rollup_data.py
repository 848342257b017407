"""Rollup rows written directly, as the rollup task would leave them: data, not mocks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from analytics.models import HISTOGRAM_SIZE, Granularity, Rollup

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


def save(rows: list[Rollup]) -> list[Rollup]:
    return Rollup.objects.bulk_create(rows)
