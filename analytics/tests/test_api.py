"""``/api/v1/analytics/{delivery,engagement,performance,cost}``: the Contract's shapes, who may
read them, what they refuse, and a query count that does not move with the volume."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from analytics.models import Rollup
from analytics.tests.rollup_data import at, hist, row, save, with_days

pytestmark = pytest.mark.django_db

CAMPAIGN = uuid.UUID("00000000-0000-4000-8000-00000000c001")
ENDPOINTS = ("delivery", "engagement", "performance", "cost")
RANGE = "from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z"


def client_with(token: str | None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def reader(make_service_token):
    return client_with(make_service_token("reports", ["analytics:read"]))


@pytest.fixture
def staff(make_user_token):
    return client_with(make_user_token("ops", staff=True))


@pytest.fixture
def data():
    hours = [
        row(at(2, 10), channel="email", provider="ses", template="welcome", variant="a",
            campaign_id=CAMPAIGN, sent=1000, delivered=990, failed=5, bounced=10,
            opened_unique=100, opened=140, clicked_unique=20, clicked=25, cost="1.500000",
            provider_calls=1005, provider_errors=5, latency_sum_ms=60_000,
            latency_hist=hist(b3=500, b4=505), queue_wait_hist=hist(b1=1000),
            api_to_provider_hist=hist(b5=1000)),
        row(at(2, 11), channel="email", provider="ses", template="welcome", variant="b",
            campaign_id=CAMPAIGN, sent=1000, delivered=995, opened_unique=130, opened=160,
            clicked_unique=26, clicked=30, cost="1.500000", provider_calls=1000,
            latency_hist=hist(b4=1000)),
        row(at(2, 12), channel="sms", provider="twilio", template="otp", sent=50, delivered=50,
            cost="3.750000", provider_calls=50, latency_hist=hist(b6=50)),
    ]  # fmt: skip
    return save(with_days(hours))


def test_delivery_answers_the_contract(reader, data):
    response = reader.get(f"/api/v1/analytics/delivery?{RANGE}&granularity=hour&group_by=channel")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) >= {"series", "totals"}
    first = body["series"][0]
    assert {"bucket", "group", "sent", "delivered", "failed", "bounced", "opened", "clicked",
            "cost"} <= set(first)  # fmt: skip
    assert first["bucket"] == "2026-03-02T10:00:00Z"
    assert first["group"] == {"channel": "email"}
    assert (first["sent"], first["opened"], first["cost"]) == (1000, 100, "1.500000")
    assert [(p["bucket"][11:16], p["group"]["channel"]) for p in body["series"]] == [
        ("10:00", "email"),
        ("11:00", "email"),
        ("12:00", "sms"),
    ]
    totals = body["totals"]
    assert (totals["sent"], totals["delivered"], totals["cost"]) == (2050, 2035, "6.750000")
    assert totals["rates"]["opened"] == round(230 / 2050, 6)
    assert body["currency"] == "EUR"


def test_delivery_by_day_and_two_dimensions(reader, data):
    response = reader.get(
        f"/api/v1/analytics/delivery/?{RANGE}&granularity=day&group_by=channel,provider"
    )
    assert response.status_code == 200, response.content
    series = response.json()["series"]
    assert [(p["bucket"], p["group"], p["sent"]) for p in series] == [
        ("2026-03-02T00:00:00Z", {"channel": "email", "provider": "ses"}, 2000),
        ("2026-03-02T00:00:00Z", {"channel": "sms", "provider": "twilio"}, 50),
    ]


def test_to_is_exclusive_and_from_inclusive(reader, data):
    # [11:00, 12:00) holds the 11:00 bucket only.
    response = reader.get("/api/v1/analytics/delivery?from=2026-03-02T11:00Z&to=2026-03-02T12:00Z")
    assert [p["bucket"] for p in response.json()["series"]] == ["2026-03-02T11:00:00Z"]
    # A naive date-time is UTC; another offset is converted.
    shifted = reader.get(
        "/api/v1/analytics/delivery?from=2026-03-02T12:00%2B01:00&to=2026-03-02T12:00"
    )
    assert [p["bucket"] for p in shifted.json()["series"]] == ["2026-03-02T11:00:00Z"]


def test_engagement_answers_the_ab_contract(reader, data):
    response = reader.get(f"/api/v1/analytics/engagement?{RANGE}&template=welcome")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [g["group"] for g in body["groups"]] == [{"variant": "a"}, {"variant": "b"}]
    ab = body["ab"]
    assert {"test", "p_value", "significant", "diff_ci", "needed_per_variant", "variants"} <= set(
        ab
    )
    assert ab["test"] == "two_proportion_z"
    assert round(ab["p_value"], 4) == 0.0355 and ab["significant"] is True
    assert ab["needed_per_variant"] is None
    assert len(ab["diff_ci"]) == 2 and ab["diff_ci"][0] < 0.03 < ab["diff_ci"][1]
    assert [{k: v[k] for k in ("key", "sent", "opened", "rate")} for v in ab["variants"]] == [
        {"key": "a", "sent": 1000, "opened": 100, "rate": 0.1},
        {"key": "b", "sent": 1000, "opened": 130, "rate": 0.13},
    ]
    assert all(len(v["ci"]) == 2 for v in ab["variants"])
    # A stricter level is asked for in the query: the same data is no longer significant.
    strict = reader.get(f"/api/v1/analytics/engagement?{RANGE}&template=welcome&alpha=0.01")
    assert strict.json()["ab"]["significant"] is False
    assert strict.json()["ab"]["needed_per_variant"] > 1000
    clicks = reader.get(f"/api/v1/analytics/engagement?{RANGE}&template=welcome&metric=click")
    assert clicks.json()["ab"]["metric"] == "click"
    assert [v["rate"] for v in clicks.json()["ab"]["variants"]] == [0.02, 0.026]


def test_engagement_of_a_campaign_and_without_variants(reader, data):
    body = reader.get(f"/api/v1/analytics/engagement?{RANGE}&campaign={CAMPAIGN}").json()
    assert [g["group"] for g in body["groups"]] == [
        {"step": None, "variant": "a"},
        {"step": None, "variant": "b"},
    ]
    assert body["ab"]["variants"][1]["key"] == "b"
    otp = reader.get(f"/api/v1/analytics/engagement?{RANGE}&template=otp").json()
    assert otp["ab"] is None


def test_performance_per_provider(reader, data):
    response = reader.get(f"/api/v1/analytics/performance?{RANGE}")
    assert response.status_code == 200, response.content
    ses, twilio = response.json()["groups"]
    assert ses["group"] == {"provider": "ses"}
    assert ses["error_rate"] == round(5 / 2005, 6)
    assert ses["throughput"]["per_minute"] == round(2000 * 60 / 86400, 6)
    # 500 in (25, 50] ms and 1,505 in (50, 100]: p50 at rank 1002.5 -> 50 + 50 * 502.5/1505.
    assert ses["latency_ms"]["p50"] == pytest.approx(50 + 50 * 502.5 / 1505)
    assert ses["latency_ms"]["p99"] == pytest.approx(50 + 50 * (0.99 * 2005 - 500) / 1505)
    assert ses["queue_wait_ms"]["p50"] == pytest.approx(7.5)
    assert ses["api_to_provider_ms"]["count"] == 1000
    assert twilio["latency_ms"]["p95"] == pytest.approx(250 + 250 * 0.95)
    assert twilio["queue_wait_ms"] == {"count": 0, "p50": None, "p95": None, "p99": None}


def test_cost_per_provider_channel_and_campaign(reader, data):
    response = reader.get(f"/api/v1/analytics/cost?{RANGE}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["currency"] == "EUR"
    assert body["total"] == {"sent": 2050, "cost": "6.750000", "cost_per_message": "0.003293"}
    assert [(p["provider"], p["cost"]) for p in body["by_provider"]] == [
        ("twilio", "3.750000"),
        ("ses", "3.000000"),
    ]
    assert [(c["channel"], c["cost"]) for c in body["by_channel"]] == [
        ("sms", "3.750000"),
        ("email", "3.000000"),
    ]
    assert [(c["campaign"], c["cost"]) for c in body["by_campaign"]] == [
        (None, "3.750000"),
        (str(CAMPAIGN), "3.000000"),
    ]
    email = reader.get(f"/api/v1/analytics/cost?{RANGE}&channel=email").json()
    assert email["total"]["cost"] == "3.000000"


# --------------------------------------------------------------------------------------- access


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_who_may_read(endpoint, make_service_token, make_user_token, reader, staff):
    path = f"/api/v1/analytics/{endpoint}?{RANGE}"
    anonymous = client_with(None).get(path)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "token_missing"
    wrong_scope = client_with(make_service_token("billing", ["notifications:send"])).get(path)
    assert wrong_scope.status_code == 403
    assert wrong_scope.json()["code"] == "scope_missing"
    assert "analytics:read" in wrong_scope.json()["detail"]
    user = client_with(make_user_token("bob")).get(path)
    assert user.status_code == 403
    assert reader.get(path).status_code == 200
    assert staff.get(path).status_code == 200


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ("from=yesterday", "validation_error", "from"),
        ("to=2026-13-01", "validation_error", "to"),
        (f"{RANGE}&granularity=week", "validation_error", "granularity"),
        (f"{RANGE}&group_by=channel,colour", "validation_error", "group_by"),
        (f"{RANGE}&campaign=not-a-uuid", "validation_error", "campaign"),
        ("from=2026-03-03&to=2026-03-02", "invalid_range", None),
        ("from=2026-03-02&to=2026-03-02", "invalid_range", None),
        ("from=2026-03-02T10:30Z&to=2026-03-03", "range_not_aligned", "from"),
        ("from=2026-03-02T10:00Z&to=2026-03-03&granularity=day", "range_not_aligned", "from"),
        ("from=2026-01-01&to=2026-05-01&granularity=hour", "range_too_large", None),
        ("from=0001-01-01&to=2026-05-01", "validation_error", "from"),
        (f"{RANGE}&channel=e%00mail", "validation_error", "channel"),
        ("from=2026-03-02%00&to=2026-03-03", "validation_error", "from"),
    ],
)
def test_bad_input_is_a_400_saying_what(reader, query, code, field):
    response = reader.get(f"/api/v1/analytics/delivery?{query}")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == code, body
    assert body["detail"]
    if field:
        assert field in body["fields"], body


@pytest.mark.parametrize(
    ("query", "field"), [("metric=opens", "metric"), ("alpha=0", "alpha"), ("alpha=nan", "alpha")]
)
def test_bad_ab_parameters_are_a_400(reader, query, field):
    response = reader.get(f"/api/v1/analytics/engagement?{RANGE}&{query}")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]


def test_without_a_range_the_last_days_are_read(reader):
    save([row(dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0), sent=3)])
    assert reader.get("/api/v1/analytics/delivery").json()["totals"]["sent"] == 3
    assert reader.get("/api/v1/analytics/delivery?granularity=day").json()["totals"]["sent"] == 0


# -------------------------------------------------------------------------------- query budget

# Queries per endpoint for a service token (its authentication reads nothing): the sums in one
# grouped query; performance adds the histograms' query.
QUERIES = {"delivery": 1, "engagement": 1, "performance": 2, "cost": 1}


def volume(n: int) -> None:
    """``n`` hour rollups over channels, providers, templates and variants (and their days)."""
    start = at(1)
    hours = [
        row(
            start + dt.timedelta(hours=i // 4),
            channel=("email", "sms")[i % 2],
            provider=("ses", "sendgrid", "twilio", "ovh")[i % 4],
            template="welcome",
            variant=("a", "b")[(i // 2) % 2],
            sent=10,
            opened_unique=i % 7,
            cost="0.100000",
            latency_hist=hist(b4=10),
        )
        for i in range(n)
    ]
    save(with_days(hours))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_query_count_does_not_move_with_the_volume(reader, endpoint):
    path = (
        f"/api/v1/analytics/{endpoint}?from=2026-03-01&to=2026-03-12"
        "&template=welcome&group_by=channel,provider"
    )
    if endpoint == "cost":
        path = path.replace("&group_by=channel,provider", "")
    answers = []
    # Each count is exact: one query more per row, or per group, would show between these two.
    for n in (10, 200):
        Rollup.objects.all().delete()
        volume(n)
        with CaptureQueriesContext(connection) as queries:
            response = reader.get(path)
        assert response.status_code == 200, response.content
        assert len(queries) == QUERIES[endpoint], [q["sql"] for q in queries]
        answers.append(response.json())
    # The larger volume was read (the answers differ), with the same queries.
    assert answers[0] != answers[1]


def test_the_schema_documents_the_four_endpoints(client):
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    for endpoint in ENDPOINTS:
        operation = paths[f"/api/v1/analytics/{endpoint}/"]["get"]
        names = {p["name"] for p in operation["parameters"]}
        assert {"from", "to", "channel", "campaign"} <= names
        assert {"200", "400", "401", "403"} <= set(operation["responses"])
    delivery = paths["/api/v1/analytics/delivery/"]["get"]
    assert {"granularity", "group_by"} <= {p["name"] for p in delivery["parameters"]}


def test_the_answers_have_the_fields_the_schema_gives(client, reader, data):
    components = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["components"]
    schemas = components["schemas"]

    def fields(name: str) -> set[str]:
        return set(schemas[name]["properties"])

    delivery = reader.get(f"/api/v1/analytics/delivery?{RANGE}&group_by=channel").json()
    assert set(delivery) == fields("AnalyticsDelivery")
    assert set(delivery["series"][0]) == fields("AnalyticsDeliveryPoint")
    assert set(delivery["totals"]) == fields("AnalyticsDeliveryCounts")
    assert set(delivery["totals"]["rates"]) == fields("AnalyticsDeliveryRates")
    engagement = reader.get(f"/api/v1/analytics/engagement?{RANGE}&template=welcome").json()
    assert set(engagement["ab"]) == fields("AnalyticsAB")
    assert set(engagement["ab"]["variants"][0]) == fields("AnalyticsVariant")
    performance = reader.get(f"/api/v1/analytics/performance?{RANGE}").json()
    assert set(performance["groups"][0]) == fields("AnalyticsPerformanceGroup")
    cost = reader.get(f"/api/v1/analytics/cost?{RANGE}").json()
    assert set(cost) == fields("AnalyticsCost")
