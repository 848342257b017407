"""Reads over the rollups, shared by the analytics API and the staff dashboard.

Every function takes its range and filters explicitly and returns plain dicts (datetimes,
Decimals, ints, floats): the API serializes them, the dashboard draws them. Each runs a fixed
number of queries whatever the volume: the sums are made by PostgreSQL (GROUP BY), histograms
included (``unnest … WITH ORDINALITY``), and the number of rows a query may return is capped.

Ranges are UTC, ``start`` inclusive and ``end`` exclusive, on whole hours (the rollups' finest
bucket). Which rollups are read:

- a **series** (``delivery_report``) reads the granularity asked: ``hour`` rows, or ``day`` rows
  (then ``start`` and ``end`` must be midnights);
- a **total** over a range (``engagement_report``, ``performance_report``, ``cost_report``) reads
  ``day`` rows for the whole UTC days inside the range and ``hour`` rows for the hours at either
  end: a day's row is the sum of its hours (``analytics.rollups`` rebuilds both together), so the
  answer is the same and a month reads thirty rows per combination, not seven hundred.

Rates are over ``sent`` (accepted by a provider), which every channel reports, whereas
``delivered`` depends on provider webhooks; the failure rate is over ``sent + failed`` (a failed
delivery may never have been sent). A rate whose denominator is zero is None. ``opened`` and
``clicked`` are unique (a delivery's first human open or click); ``*_total`` count every human
one. ``possibly_duplicate`` counts the sends (within ``sent``) repeated after a worker died during
the provider call: the person may have had the message twice. Events count in the bucket they happen in, so a range that cuts a send short can see opens
whose sends fall before it (the A/B test caps successes at ``sent``).

Dimensions that are empty in the rollups (no provider for in-app, no template) come out as None.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import BigIntegerField, FloatField, Q, QuerySet, Sum
from django.db.models.functions import Cast

from analytics import stats
from analytics.models import (
    HISTOGRAM_SIZE,
    LATENCY_BOUNDS_MS,
    ROLLUP_COUNTS,
    ROLLUP_HISTOGRAMS,
    Granularity,
    Rollup,
)
from communication.exceptions import APIError

# group_by name -> Rollup column.
DIMENSIONS: dict[str, str] = {
    "channel": "channel",
    "provider": "provider",
    "category": "category",
    "template": "template",
    "campaign": "campaign_id",
    "step": "step_id",
    "variant": "variant",
}
STEP = {Granularity.HOUR: dt.timedelta(hours=1), Granularity.DAY: dt.timedelta(days=1)}
# Caps that keep one answer small: buckets in a series, and rows (bucket by group, or groups of a
# total) in any answer. Past them the caller gets a 400 saying which, never a truncated answer.
MAX_BUCKETS = 2_000
MAX_ROWS = 10_000
METRICS = ("open", "click")
COUNTERS = ROLLUP_COUNTS
HISTOGRAMS = ROLLUP_HISTOGRAMS
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
_BIGINT: BigIntegerField[int, int] = BigIntegerField()
_FLOAT: FloatField[float, float] = FloatField()


class RangeError(APIError):
    """A range the rollups cannot answer: reversed, not on bucket edges, or too large."""


@dataclass(frozen=True)
class Filters:
    """Rollup dimensions to keep (None: any)."""

    channel: str | None = None
    provider: str | None = None
    category: str | None = None
    template: str | None = None
    variant: str | None = None
    campaign: uuid.UUID | None = None
    step: uuid.UUID | None = None

    def q(self) -> Q:
        q = Q()
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                q &= Q(**{DIMENSIONS[f.name]: value})
        return q

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def parse_group_by(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` checked against the dimensions, duplicates dropped (order kept)."""
    out: list[str] = []
    for name in names:
        if name not in DIMENSIONS:
            raise APIError(
                f"Unknown dimension {name!r}; one of: {', '.join(DIMENSIONS)}.",
                fields={"group_by": [f"Unknown dimension {name!r}."]},
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def _aligned(moment: dt.datetime, granularity: str) -> bool:
    utc = moment.astimezone(dt.UTC)
    if utc.minute or utc.second or utc.microsecond:
        return False
    return granularity == Granularity.HOUR or utc.hour == 0


def check_range(start: dt.datetime, end: dt.datetime, granularity: str = Granularity.HOUR) -> int:
    """The number of ``granularity`` buckets in ``[start, end)``; RangeError when the range is
    reversed or empty, or does not start and end on bucket edges."""
    if start >= end:
        raise RangeError("'from' must be before 'to'.", code="invalid_range")
    for name, moment in (("from", start), ("to", end)):
        if not _aligned(moment, granularity):
            edge = "a whole hour" if granularity == Granularity.HOUR else "midnight UTC"
            raise RangeError(
                f"'{name}' must fall on {edge} with granularity={granularity}.",
                code="range_not_aligned",
                fields={name: [f"Must fall on {edge}."]},
            )
    return int((end - start) / STEP[Granularity(granularity)])


def _floor_day(moment: dt.datetime) -> dt.datetime:
    utc = moment.astimezone(dt.UTC)
    return utc.replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil_day(moment: dt.datetime) -> dt.datetime:
    floor = _floor_day(moment)
    return floor if floor == moment else floor + dt.timedelta(days=1)


def total_range_q(start: dt.datetime, end: dt.datetime) -> Q:
    """The rollup rows that add up to ``[start, end)`` once each: day rows for the whole days,
    hour rows for the rest."""
    first_day, last_day = _ceil_day(start), _floor_day(end)
    if first_day >= last_day:
        return Q(granularity=Granularity.HOUR, bucket__gte=start, bucket__lt=end)
    return (
        Q(granularity=Granularity.DAY, bucket__gte=first_day, bucket__lt=last_day)
        | Q(granularity=Granularity.HOUR, bucket__gte=start, bucket__lt=first_day)
        | Q(granularity=Granularity.HOUR, bucket__gte=last_day, bucket__lt=end)
    )


def _sums(counters: Sequence[str], *, cost: bool = True) -> dict[str, Any]:
    # Annotations cannot take a field's own name: "n_<field>". PostgreSQL sums bigints as
    # numeric, which the driver turns into Decimals (slow on thousands of rows): cast back.
    out: dict[str, Any] = {
        f"n_{name}": Cast(Sum(name), output_field=_FLOAT if name.endswith("_ms") else _BIGINT)
        for name in counters
    }
    if cost:
        out["n_cost"] = Sum("cost")
    return out


def _grouped(
    qs: QuerySet[Rollup], keys: Sequence[str], counters: Sequence[str], *, cost: bool = True
) -> list[dict[str, Any]]:
    """One query: the sums of ``counters`` per value of the ``keys`` columns, at most
    MAX_ROWS rows (RangeError past that)."""
    if not keys:
        # values() without names would group by every column: one total row instead.
        total = qs.aggregate(**_sums(counters, cost=cost))
        return [total] if total[f"n_{counters[0]}"] is not None else []
    rows = list(
        qs.values(*keys).annotate(**_sums(counters, cost=cost)).order_by(*keys)[: MAX_ROWS + 1]
    )
    if len(rows) > MAX_ROWS:
        raise RangeError(
            f"The answer would hold more than {MAX_ROWS} rows: narrow the range, use "
            "granularity=day, group by fewer dimensions or filter.",
            code="too_many_rows",
        )
    return rows


def _group(row: dict[str, Any], group_by: Sequence[str]) -> dict[str, Any]:
    return {name: (row[DIMENSIONS[name]] or None) for name in group_by}


def _counts(row: dict[str, Any], counters: Sequence[str]) -> dict[str, int]:
    return {name: int(row[f"n_{name}"] or 0) for name in counters}


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator > 0 else None


def _add(total: dict[str, Any], counts: dict[str, Any]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


# ------------------------------------------------------------------------------------- delivery

DELIVERY_COUNTERS = (
    "sent",
    "delivered",
    "failed",
    "bounced",
    "complained",
    "opened_unique",
    "opened",
    "clicked_unique",
    "clicked",
    "unsubscribed",
    "possibly_duplicate",
)


def _delivery_item(counts: dict[str, Any], cost: Decimal) -> dict[str, Any]:
    sent = counts["sent"]
    return {
        "sent": sent,
        "delivered": counts["delivered"],
        "failed": counts["failed"],
        "bounced": counts["bounced"],
        "complained": counts["complained"],
        "opened": counts["opened_unique"],
        "opened_total": counts["opened"],
        "clicked": counts["clicked_unique"],
        "clicked_total": counts["clicked"],
        "unsubscribed": counts["unsubscribed"],
        "possibly_duplicate": counts["possibly_duplicate"],
        "cost": cost,
        "rates": {
            "delivered": _rate(counts["delivered"], sent),
            "failed": _rate(counts["failed"], sent + counts["failed"]),
            "bounced": _rate(counts["bounced"], sent),
            "complained": _rate(counts["complained"], sent),
            "opened": _rate(counts["opened_unique"], sent),
            "clicked": _rate(counts["clicked_unique"], sent),
            "unsubscribed": _rate(counts["unsubscribed"], sent),
            "possibly_duplicate": _rate(counts["possibly_duplicate"], sent),
        },
    }


def delivery_report(
    *,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str = Granularity.HOUR,
    group_by: Sequence[str] = (),
    filters: Filters | None = None,
) -> dict[str, Any]:
    """Counts and rates per bucket (UTC) and group over ``[start, end)``, and their totals.

    ``{"granularity", "currency", "series": [{"bucket", "group", "sent", …, "cost", "rates"}],
    "totals": {…}}``; buckets without any rollup are absent from the series. One query.
    """
    group_by = parse_group_by(group_by)
    buckets = check_range(start, end, granularity)
    if buckets > MAX_BUCKETS:
        raise RangeError(
            f"{buckets} {granularity} buckets: at most {MAX_BUCKETS} (use granularity=day or a "
            "shorter range).",
            code="range_too_large",
        )
    qs = Rollup.objects.filter(
        (filters or Filters()).q(), granularity=granularity, bucket__gte=start, bucket__lt=end
    )
    keys = ["bucket", *(DIMENSIONS[name] for name in group_by)]
    rows = _grouped(qs, keys, DELIVERY_COUNTERS)
    series = []
    totals: dict[str, Any] = {}
    total_cost = Decimal(0)
    for row in rows:
        counts = _counts(row, DELIVERY_COUNTERS)
        cost = row["n_cost"] or Decimal(0)
        _add(totals, counts)
        total_cost += cost
        series.append(
            {"bucket": row["bucket"], "group": _group(row, group_by)} | _delivery_item(counts, cost)
        )
    if not totals:
        totals = dict.fromkeys(DELIVERY_COUNTERS, 0)
    return {
        "granularity": granularity,
        "currency": settings.COST_CURRENCY,
        "series": series,
        "totals": _delivery_item(totals, total_cost),
    }


# ----------------------------------------------------------------------------------- engagement

ENGAGEMENT_COUNTERS = (
    "sent",
    "delivered",
    "opened_unique",
    "opened",
    "machine_opened",
    "clicked_unique",
    "clicked",
    "unsubscribed",
)


def _engagement_item(counts: dict[str, int]) -> dict[str, Any]:
    sent = counts["sent"]
    return {
        "sent": sent,
        "delivered": counts["delivered"],
        "opened": counts["opened_unique"],
        "opened_total": counts["opened"],
        "machine_opened": counts["machine_opened"],
        "clicked": counts["clicked_unique"],
        "clicked_total": counts["clicked"],
        "unsubscribed": counts["unsubscribed"],
        "rates": {
            "open": _rate(counts["opened_unique"], sent),
            "open_total": _rate(counts["opened"], sent),
            "click": _rate(counts["clicked_unique"], sent),
            "click_total": _rate(counts["clicked"], sent),
            "click_to_open": _rate(counts["clicked_unique"], counts["opened_unique"]),
            "unsubscribe": _rate(counts["unsubscribed"], sent),
        },
    }


def engagement_report(
    *,
    start: dt.datetime,
    end: dt.datetime,
    group_by: Sequence[str] | None = None,
    filters: Filters | None = None,
    metric: str = "open",
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Open, click and unsubscribe rates per group over ``[start, end)``, their totals, and the
    A/B comparison of the variants within the filters (``"ab"``: None with fewer than two
    non-empty variants). ``metric``: ``open`` (unique opens over sent) or ``click`` (unique
    clicks over sent). One query.

    The A/B result pools each variant over the rows the filters keep: filter by ``template``,
    or by ``campaign`` and ``step``, to compare one test's variants. Without ``group_by``: per
    variant for a template, per step and variant for a campaign, per template otherwise.
    """
    filters = filters or Filters()
    if group_by is None:
        if filters.campaign:
            group_by = ("step", "variant")
        elif filters.template:
            group_by = ("variant",)
        else:
            group_by = ("template",)
    group_by = parse_group_by(group_by)
    if metric not in METRICS:
        message = f"Must be one of: {', '.join(METRICS)}."
        raise APIError(f"metric: {message}", fields={"metric": [message]})
    check_range(start, end)
    qs = Rollup.objects.filter(filters.q() & total_range_q(start, end))
    keys = list(dict.fromkeys([*(DIMENSIONS[name] for name in group_by), "variant"]))
    rows = _grouped(qs, keys, ENGAGEMENT_COUNTERS, cost=False)

    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    variants: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = dict.fromkeys(ENGAGEMENT_COUNTERS, 0)
    for row in rows:
        counts = _counts(row, ENGAGEMENT_COUNTERS)
        group = _group(row, group_by)
        entry = groups.setdefault(tuple(group.values()), {"group": group, "counts": {}})
        _add(entry["counts"], counts)
        _add(totals, counts)
        if row["variant"]:
            _add(variants.setdefault(row["variant"], {}), counts)

    success = "opened_unique" if metric == "open" else "clicked_unique"
    ab = stats.ab_test([(key, c["sent"], c[success]) for key, c in variants.items()], alpha=alpha)
    if ab is not None:
        ab["metric"] = metric
        for variant in ab["variants"]:
            counts = variants[variant["key"]]
            variant["opened"] = counts["opened_unique"]
            variant["clicked"] = counts["clicked_unique"]
    return {
        "groups": [
            {"group": entry["group"]} | _engagement_item(entry["counts"])
            for entry in groups.values()
        ],
        "totals": _engagement_item(totals),
        "ab": ab,
    }


# ---------------------------------------------------------------------------------- performance


def _histograms(
    qs: QuerySet[Rollup], keys: Sequence[str]
) -> dict[tuple[Any, ...], list[list[int]]]:
    """One query: the three histograms summed element-wise per value of ``keys``, as
    ``{key values: [latency, queue_wait, api_to_provider]}``."""
    inner, params = qs.values(*keys, *HISTOGRAMS).query.sql_with_params()
    columns = ", ".join(f'r."{key}"' for key in keys)
    select = f"{columns}, " if keys else ""
    group = f"{columns}, " if keys else ""
    sql = (
        f"SELECT {select}u.i, sum(u.l)::bigint, sum(u.q)::bigint, sum(u.a)::bigint FROM ({inner}) r "  # noqa: S608 - column names are ours
        "CROSS JOIN LATERAL unnest(r.latency_hist, r.queue_wait_hist, r.api_to_provider_hist) "
        "WITH ORDINALITY AS u(l, q, a, i) "
        f"GROUP BY {group}u.i"
    )
    out: dict[tuple[Any, ...], list[list[int]]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for record in cursor.fetchall():
            key = tuple(record[: len(keys)])
            i, latency, queue_wait, api = record[len(keys) :]
            hists = out.setdefault(key, [[0] * HISTOGRAM_SIZE for _ in HISTOGRAMS])
            if 1 <= i <= HISTOGRAM_SIZE:
                hists[0][i - 1] = int(latency or 0)
                hists[1][i - 1] = int(queue_wait or 0)
                hists[2][i - 1] = int(api or 0)
    return out


def _percentiles(hist: Sequence[int]) -> dict[str, Any]:
    return {
        "count": sum(hist),
        **{name: stats.percentile(hist, q, LATENCY_BOUNDS_MS) for name, q in PERCENTILES},
    }


PERFORMANCE_COUNTERS = ("sent", "failed", "provider_calls", "provider_errors", "possibly_duplicate")


def performance_report(
    *,
    start: dt.datetime,
    end: dt.datetime,
    group_by: Sequence[str] = ("provider",),
    filters: Filters | None = None,
) -> dict[str, Any]:
    """Per provider (or ``group_by``) over ``[start, end)``: provider latency, queue wait and
    API-to-provider time (p50/p95/p99 in ms from the histograms, and the mean provider call),
    error rate (provider errors over provider calls), throughput (sent per second and per
    minute over the range) and the possibly-duplicate sends. Two queries: the counters, and
    the histograms."""
    group_by = parse_group_by(group_by)
    check_range(start, end)
    qs = Rollup.objects.filter((filters or Filters()).q() & total_range_q(start, end))
    keys = [DIMENSIONS[name] for name in group_by]
    counters = (*PERFORMANCE_COUNTERS, "latency_sum_ms")
    rows = _grouped(qs, keys, counters, cost=False)
    hists = _histograms(qs, keys)
    seconds = (end - start).total_seconds()
    empty = [[0] * HISTOGRAM_SIZE for _ in HISTOGRAMS]
    out = []
    for row in rows:
        counts = _counts(row, PERFORMANCE_COUNTERS)
        latency, queue_wait, api = hists.get(tuple(row[k] for k in keys), empty)
        calls = counts["provider_calls"]
        out.append(
            {
                "group": _group(row, group_by),
                **counts,
                "error_rate": _rate(counts["provider_errors"], calls),
                "throughput": {
                    "per_second": round(counts["sent"] / seconds, 6),
                    "per_minute": round(counts["sent"] * 60 / seconds, 6),
                },
                "latency_ms": _percentiles(latency)
                | {"mean": round(row["n_latency_sum_ms"] / calls, 3) if calls else None},
                "queue_wait_ms": _percentiles(queue_wait),
                "api_to_provider_ms": _percentiles(api),
            }
        )
    return {"seconds": seconds, "groups": out}


# ----------------------------------------------------------------------------------------- cost


def cost_report(
    *, start: dt.datetime, end: dt.datetime, filters: Filters | None = None
) -> dict[str, Any]:
    """What was spent over ``[start, end)`` in ``COST_CURRENCY``: the total and the breakdowns by
    provider (with its channel), by channel and by campaign, each with its sent count and cost
    per message. One query (grouped by channel, provider and campaign, then folded)."""
    check_range(start, end)
    qs = Rollup.objects.filter((filters or Filters()).q() & total_range_q(start, end))
    rows = _grouped(qs, ["channel", "provider", "campaign_id"], ("sent",))
    by: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {
        "by_provider": {},
        "by_channel": {},
        "by_campaign": {},
    }
    total: dict[str, Any] = {"sent": 0, "cost": Decimal(0)}
    for row in rows:
        sent, cost = int(row["n_sent"] or 0), row["n_cost"] or Decimal(0)
        keys = {
            "by_provider": {"channel": row["channel"] or None, "provider": row["provider"] or None},
            "by_channel": {"channel": row["channel"] or None},
            "by_campaign": {"campaign": row["campaign_id"]},
        }
        for name, group in keys.items():
            entry = by[name].setdefault(tuple(group.values()), {**group, "sent": 0, "cost": 0})
            entry["sent"] += sent
            entry["cost"] += cost
        total["sent"] += sent
        total["cost"] += cost

    def finish(entry: dict[str, Any]) -> dict[str, Any]:
        cost = Decimal(entry["cost"])
        per = (cost / entry["sent"]).quantize(Decimal("0.000001")) if entry["sent"] else None
        return entry | {"cost": cost, "cost_per_message": per}

    def ordered(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted((finish(e) for e in entries), key=lambda e: e["cost"], reverse=True)

    return {
        "currency": settings.COST_CURRENCY,
        "total": finish(total),
        **{name: ordered(groups.values()) for name, groups in by.items()},
    }
