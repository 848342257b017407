"""The reports read from rollup rows written here directly (the rows the rollup task would leave):
bucket edges, grouping, filters, the day/hour plan of totals, percentiles, cost, and the caps."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from decimal import Decimal

import pytest

from analytics import selectors
from analytics.models import Granularity
from analytics.selectors import Filters, RangeError
from analytics.tests.rollup_data import at, hist, hour_and_day, row, save, with_days

pytestmark = pytest.mark.django_db

CAMPAIGN = uuid.UUID("00000000-0000-4000-8000-00000000c001")
STEP = uuid.UUID("00000000-0000-4000-8000-00000000501a")


def test_from_is_inclusive_and_to_exclusive_at_bucket_edges():
    save([row(at(2, h), channel="email", sent=h + 1) for h in (9, 10, 11, 12)])
    report = selectors.delivery_report(start=at(2, 10), end=at(2, 12))
    assert [(p["bucket"], p["sent"]) for p in report["series"]] == [
        (at(2, 10), 11),
        (at(2, 11), 12),
    ]
    assert report["totals"]["sent"] == 23


def test_day_granularity_reads_day_rows_and_wants_midnights():
    save(
        [
            row(at(1), Granularity.DAY, channel="email", sent=5),
            row(at(2), Granularity.DAY, channel="email", sent=7),
            row(at(2, 3), Granularity.HOUR, channel="email", sent=7),
        ]
    )
    report = selectors.delivery_report(start=at(1), end=at(3), granularity="day")
    assert [(p["bucket"], p["sent"]) for p in report["series"]] == [(at(1), 5), (at(2), 7)]
    with pytest.raises(RangeError) as exc:
        selectors.delivery_report(start=at(1, 5), end=at(3), granularity="day")
    assert exc.value.code == "range_not_aligned"


@pytest.fixture
def mixed():
    """Two channels, two providers, two templates with variants, a campaign step."""
    rows = []
    for channel, provider, template, variant, sent in [
        ("email", "ses", "welcome", "a", 10),
        ("email", "ses", "welcome", "b", 20),
        ("email", "sendgrid", "welcome", "a", 40),
        ("sms", "twilio", "otp", "", 80),
    ]:
        for hour in (10, 11):
            rows.append(
                row(
                    at(2, hour),
                    channel=channel,
                    provider=provider,
                    category="marketing" if template == "welcome" else "security",
                    template=template,
                    variant=variant,
                    campaign_id=CAMPAIGN if template == "welcome" else None,
                    step_id=STEP if template == "welcome" else None,
                    sent=sent,
                    delivered=sent - 1,
                    cost=str(Decimal("0.01") * sent),
                )
            )
    save(with_days(rows))
    return rows


@pytest.mark.parametrize(
    "group_by",
    [
        combo
        for size in (1, 2)
        for combo in itertools.combinations(list(selectors.DIMENSIONS), size)
    ],
)
def test_every_group_by_combination_sums_to_the_rows_of_its_group(mixed, group_by):
    report = selectors.delivery_report(start=at(2), end=at(3), group_by=group_by)
    expected: dict[tuple, int] = {}
    for r in mixed:
        key = (r.bucket, *(getattr(r, selectors.DIMENSIONS[d]) or None for d in group_by))
        expected[key] = expected.get(key, 0) + r.sent
    got = {(p["bucket"], *p["group"].values()): p["sent"] for p in report["series"]}
    assert got == expected
    assert all(list(p["group"]) == list(group_by) for p in report["series"])
    assert report["totals"]["sent"] == sum(r.sent for r in mixed)


def test_filters_keep_their_rows(mixed):
    by_provider = selectors.delivery_report(start=at(2), end=at(3), filters=Filters(provider="ses"))
    assert by_provider["totals"]["sent"] == 2 * (10 + 20)
    by_campaign = selectors.delivery_report(
        start=at(2), end=at(3), filters=Filters(campaign=CAMPAIGN, step=STEP, variant="a")
    )
    assert by_campaign["totals"]["sent"] == 2 * (10 + 40)
    assert by_campaign["totals"]["cost"] == Decimal("1.00")
    nothing = selectors.delivery_report(start=at(2), end=at(3), filters=Filters(channel="push"))
    assert nothing["series"] == [] and nothing["totals"]["sent"] == 0
    assert nothing["totals"]["rates"]["delivered"] is None


def test_rates_are_over_sent():
    save([row(at(2, 10), sent=200, delivered=180, failed=50, bounced=4, opened_unique=60,
              opened=90, clicked_unique=12, clicked=15, unsubscribed=2,
              possibly_duplicate=1)])  # fmt: skip
    totals = selectors.delivery_report(start=at(2), end=at(3))["totals"]
    assert totals["rates"] == {
        "delivered": 0.9,
        "failed": 0.2,  # 50 / (200 + 50)
        "bounced": 0.02,
        "complained": 0.0,
        "opened": 0.3,
        "clicked": 0.06,
        "unsubscribed": 0.01,
        "possibly_duplicate": 0.005,
    }
    assert (totals["opened"], totals["opened_total"]) == (60, 90)
    assert totals["possibly_duplicate"] == 1


def test_totals_read_day_rows_for_whole_days_and_hours_at_the_ends():
    # Hours on four days, and each day's row as the rollup task writes it (the sum of its hours).
    hours = {at(1, 18): 1, at(1, 21): 2, at(2, 5): 4, at(3, 2): 8, at(4, 1): 16, at(4, 4): 32}
    rows = [row(b, channel="email", sent=n, provider_calls=n) for b, n in hours.items()]
    for day in (1, 2, 3, 4):
        total = sum(n for b, n in hours.items() if b.day == day)
        rows.append(
            row(at(day), Granularity.DAY, channel="email", sent=total, provider_calls=total)
        )
    save(rows)
    # [1st 20:00, 4th 03:00): hour 21 of the 1st, the 2nd and 3rd whole, hour 1 of the 4th.
    expected = 2 + 4 + 8 + 16
    cost = selectors.cost_report(start=at(1, 20), end=at(4, 3))
    assert cost["total"]["sent"] == expected
    performance = selectors.performance_report(start=at(1, 20), end=at(4, 3), group_by=())
    assert performance["groups"][0]["provider_calls"] == expected
    # Inside one day: hours only.
    assert selectors.cost_report(start=at(4, 0), end=at(4, 2))["total"]["sent"] == 16
    # Whole days: day rows only.
    assert selectors.cost_report(start=at(2), end=at(4))["total"]["sent"] == 12


def test_performance_gives_percentiles_error_rate_and_throughput():
    save(
        hour_and_day(
            at(2, 10),
            channel="email",
            provider="ses",
            sent=90,
            failed=10,
            provider_calls=100,
            provider_errors=10,
            latency_sum_ms=8000,
            latency_hist=hist(b3=50, b4=40, b5=10),
            queue_wait_hist=hist(b0=90, b15=10),
            api_to_provider_hist=hist(b6=100),
        )
        + hour_and_day(
            at(2, 11),
            channel="sms",
            provider="twilio",
            sent=30,
            provider_calls=30,
            latency_hist=hist(b7=30),
            queue_wait_hist=hist(b1=30),
            api_to_provider_hist=hist(b7=30),
        )
    )
    report = selectors.performance_report(start=at(2), end=at(3))
    assert report["seconds"] == 86400
    ses, twilio = report["groups"]
    assert ses["group"] == {"provider": "ses"}
    assert ses["error_rate"] == 0.1
    assert ses["throughput"] == {"per_second": round(90 / 86400, 6), "per_minute": 0.0625}
    assert ses["latency_ms"] == {
        "count": 100,
        "p50": 50.0,
        "p95": 175.0,
        "p99": 235.0,
        "mean": 80.0,
    }
    assert ses["queue_wait_ms"]["p99"] == 3_600_000  # the overflow bucket's lower bound
    assert ses["api_to_provider_ms"]["p50"] == pytest.approx(375.0)  # (250, 500] halfway
    assert twilio["group"] == {"provider": "twilio"}
    assert twilio["error_rate"] == 0.0
    assert twilio["latency_ms"]["p50"] == pytest.approx(750.0)
    # Over a range that holds only the day row of the 2nd (whole days), the same numbers.
    whole_days = selectors.performance_report(start=at(1), end=at(4))
    assert whole_days["groups"][0]["latency_ms"] == ses["latency_ms"]
    both = selectors.performance_report(start=at(2), end=at(3), group_by=("channel", "provider"))
    assert [g["group"] for g in both["groups"]] == [
        {"channel": "email", "provider": "ses"},
        {"channel": "sms", "provider": "twilio"},
    ]


def test_cost_by_provider_channel_and_campaign(mixed, settings):
    settings.COST_CURRENCY = "USD"
    report = selectors.cost_report(start=at(2), end=at(3))
    assert report["currency"] == "USD"
    assert report["total"] == {
        "sent": 300,
        "cost": Decimal("3.00"),
        "cost_per_message": Decimal("0.010000"),
    }
    assert [(p["channel"], p["provider"], p["cost"]) for p in report["by_provider"]] == [
        ("sms", "twilio", Decimal("1.60")),
        ("email", "sendgrid", Decimal("0.80")),
        ("email", "ses", Decimal("0.60")),
    ]
    assert [(c["channel"], c["sent"], c["cost"]) for c in report["by_channel"]] == [
        ("sms", 160, Decimal("1.60")),
        ("email", 140, Decimal("1.40")),
    ]
    assert [(c["campaign"], c["cost"]) for c in report["by_campaign"]] == [
        (None, Decimal("1.60")),
        (CAMPAIGN, Decimal("1.40")),
    ]


def test_engagement_per_variant_with_its_ab_result():
    save(
        hour_and_day(at(2, 10), template="welcome", variant="a", sent=1000, opened_unique=100,
                     opened=150, clicked_unique=30, clicked=40, unsubscribed=3)
        + hour_and_day(at(2, 10), template="welcome", variant="b", sent=1000, opened_unique=130,
                       opened=170, clicked_unique=31, clicked=35)
        + hour_and_day(at(2, 10), template="other", variant="z", sent=5000, opened_unique=5000)
    )  # fmt: skip
    report = selectors.engagement_report(
        start=at(1), end=at(3, 12), filters=Filters(template="welcome")
    )
    assert [g["group"] for g in report["groups"]] == [{"variant": "a"}, {"variant": "b"}]
    a = report["groups"][0]
    assert a["rates"]["open"] == 0.1 and a["rates"]["open_total"] == 0.15
    assert a["rates"]["click_to_open"] == 0.3 and a["rates"]["unsubscribe"] == 0.003
    assert report["totals"]["sent"] == 2000
    ab = report["ab"]
    assert ab["test"] == "two_proportion_z" and ab["metric"] == "open"
    assert round(ab["p_value"], 4) == 0.0355 and ab["significant"] is True
    assert [(v["key"], v["sent"], v["opened"], v["rate"]) for v in ab["variants"]] == [
        ("a", 1000, 100, 0.1),
        ("b", 1000, 130, 0.13),
    ]
    clicks = selectors.engagement_report(
        start=at(1), end=at(3, 12), filters=Filters(template="welcome"), metric="click"
    )["ab"]
    assert clicks["metric"] == "click" and clicks["significant"] is False
    assert clicks["variants"][0]["rate"] == 0.03 and clicks["needed_per_variant"] > 1000
    # Without a template: per template, and the variants of both templates are compared.
    everything = selectors.engagement_report(start=at(1), end=at(3, 12))
    assert [g["group"] for g in everything["groups"]] == [
        {"template": "other"},
        {"template": "welcome"},
    ]
    assert everything["ab"]["test"] == "chi_squared"


def test_engagement_for_a_campaign_groups_by_step_and_variant():
    other_step = uuid.uuid4()
    save(
        [
            row(at(2, 9), campaign_id=CAMPAIGN, step_id=STEP, variant="a", sent=10),
            row(at(2, 9), campaign_id=CAMPAIGN, step_id=STEP, variant="b", sent=10),
            row(at(2, 9), campaign_id=CAMPAIGN, step_id=other_step, sent=10),
        ]
    )
    report = selectors.engagement_report(
        start=at(2), end=at(2, 12), filters=Filters(campaign=CAMPAIGN)
    )
    assert {(g["group"]["step"], g["group"]["variant"]) for g in report["groups"]} == {
        (STEP, "a"),
        (STEP, "b"),
        (other_step, None),
    }
    assert report["ab"]["variants"][0]["key"] == "a"


def test_a_single_variant_has_no_ab_result():
    save([row(at(2, 9), template="t", variant="a", sent=10, opened_unique=3)])
    report = selectors.engagement_report(start=at(2), end=at(3), filters=Filters(template="t"))
    assert report["ab"] is None


def test_ranges_that_are_reversed_unaligned_or_too_large_are_refused():
    with pytest.raises(RangeError) as exc:
        selectors.delivery_report(start=at(3), end=at(2))
    assert exc.value.code == "invalid_range"
    with pytest.raises(RangeError) as exc:
        selectors.cost_report(start=at(2, 10).replace(minute=30), end=at(3))
    assert exc.value.code == "range_not_aligned"
    with pytest.raises(RangeError) as exc:
        selectors.delivery_report(start=at(1, month=1), end=at(1, month=5))  # 2,856 hours
    assert exc.value.code == "range_too_large"
    assert selectors.delivery_report(start=at(1, month=1), end=at(1, month=5), granularity="day")


def test_too_many_bucket_group_pairs_are_refused(monkeypatch):
    # The cap the selectors read, lowered: the real one needs ten thousand rollup rows written
    # first, the slowest part of the suite's fast tests. 10 hours by 3 channels is one past it.
    monkeypatch.setattr(selectors, "MAX_ROWS", 29)
    start = at(1)
    save(
        [
            row(start + dt.timedelta(hours=h), channel=f"c{i}", sent=1)
            for h in range(10)
            for i in range(3)
        ]
    )
    end = start + dt.timedelta(hours=10)
    with pytest.raises(RangeError) as exc:
        selectors.delivery_report(start=start, end=end, group_by=["channel"])
    assert exc.value.code == "too_many_rows"
    # One series: 10 points, under the cap; and exactly the cap is allowed.
    assert len(selectors.delivery_report(start=start, end=end)["series"]) == 10
    monkeypatch.setattr(selectors, "MAX_ROWS", 30)
    assert (
        len(selectors.delivery_report(start=start, end=end, group_by=["channel"])["series"]) == 30
    )
