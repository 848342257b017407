"""Possibly-duplicate sends in analytics: a delivery whose worker died during its provider call is
swept back to the queue flagged, sent again through a provider played by a local server, and
counted as such by the rollups (a run and a rebuild alike), the analytics API, the console's
dashboard and the Prometheus counter. Everything through the service's own path; only SendGrid
is played."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from lxml import html
from rest_framework.test import APIClient

from analytics import rollups
from analytics.models import Event, Rollup
from analytics.tests.test_metrics import TOKEN, parse, value
from analytics.tests.test_rollups import everything, run
from communication.models import User
from notifications import services
from notifications.models import Delivery
from notifications.tests.fakes import sendgrid_in_process

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SENDGRID = "/sendgrid/v3/mail/send"
DUPLICATES = "notifications_deliveries_possibly_duplicate_total"


@pytest.fixture
def sendgrid(settings, httpserver):
    sendgrid_in_process(settings, httpserver)
    settings.METRICS_TOKEN = TOKEN
    httpserver.expect_request(SENDGRID).respond_with_data("", status=202)
    return httpserver


def queue_emails(count: int) -> list[str]:
    outcome = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"email": f"d{i}@example.com"} for i in range(count)],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Hi", "body": "Hello."},
        },
    )
    return [n["deliveries"][0]["id"] for n in outcome.body["notifications"]]


def die_during_the_call(delivery_id: str) -> None:
    """What a worker killed inside its provider call leaves: the delivery claimed and marked as
    being called by the worker's own statements, then its lease run out."""
    (claimed,) = services.deliveries_claim([delivery_id])
    services.deliveries_record_sent([], calling=[claimed.id])
    Delivery.objects.filter(id=delivery_id).update(
        lease_until=timezone.now() - dt.timedelta(seconds=1)
    )


def scrape(client) -> dict:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    return parse(response.content)


def text(node) -> str:
    return " ".join(node.text_content().split())


def test_a_send_repeated_after_a_crash_is_counted_possibly_duplicate_everywhere(
    sendgrid, client, make_service_token
):
    crashed, *calm = queue_emails(3)
    die_during_the_call(crashed)
    assert services.deliveries_sweep()["expired"] == 1
    assert Delivery.objects.get(id=crashed).possibly_duplicate

    before = scrape(client)
    outcomes = services.deliveries_attempt([crashed, *calm])
    assert outcomes == dict.fromkeys([crashed, *calm], "sent")
    assert len(sendgrid.log) == 3
    after = scrape(client)
    moved = value(after, DUPLICATES, channel="email", provider="sendgrid") - value(
        before, DUPLICATES, channel="email", provider="sendgrid"
    )
    assert moved == 1, "the Prometheus counter counts the flagged send alone"

    sent = Event.objects.get(delivery_id=crashed, type="sent")
    assert sent.data["possibly_duplicate"] is True
    hour = sent.occurred_at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)

    # The rollup run counts the flagged send in its hour and its day; a rebuild of the range
    # gives the same rows.
    run()
    counted = Rollup.objects.get(granularity="hour", bucket=hour, provider="sendgrid")
    assert (counted.sent, counted.possibly_duplicate) == (3, 1)
    day = Rollup.objects.get(granularity="day", bucket=hour.replace(hour=0), provider="sendgrid")
    assert (day.sent, day.possibly_duplicate) == (3, 1)
    rolled = everything()
    rollups.rollup_rebuild(hour, hour + dt.timedelta(hours=1))
    assert everything() == rolled

    # The analytics API: the series, the totals and their rate; the performance per provider.
    reader = APIClient()
    reader.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_service_token('reports', ['analytics:read'])}"
    )
    span = f"from={hour:%Y-%m-%dT%H}:00:00Z&to={hour + dt.timedelta(hours=1):%Y-%m-%dT%H}:00:00Z"
    body = reader.get(f"/api/v1/analytics/delivery?{span}&group_by=provider").json()
    (point,) = body["series"]
    assert (point["group"], point["sent"], point["possibly_duplicate"]) == (
        {"provider": "sendgrid"},
        3,
        1,
    )
    assert body["totals"]["possibly_duplicate"] == 1
    assert body["totals"]["rates"]["possibly_duplicate"] == round(1 / 3, 6)
    performance = reader.get(f"/api/v1/analytics/performance?{span}").json()
    (provider,) = performance["groups"]
    assert (provider["group"], provider["possibly_duplicate"]) == ({"provider": "sendgrid"}, 1)

    # The console's dashboard: a figure beside the others, and a column per provider.
    analyst = User.objects.create_user(
        username="ana", email="ana@example.com", password="pw", is_staff=True
    )
    analyst.user_permissions.add(Permission.objects.get(codename="view_rollup"))
    client.force_login(analyst)
    response = client.get("/admin/analytics/dashboard/?range=24h")
    assert response.status_code == 200
    doc = html.fromstring(response.content.decode())
    (kpi,) = doc.xpath('//*[@data-kpi="possibly_duplicate"]')
    assert text(kpi) == "Possibly duplicate 1 33.33 % of sent, re-sent after a crash"
    headers = [text(th) for th in doc.xpath('//*[@id="providers-table"]/thead//th')]
    (cells,) = [
        [text(td) for td in tr.xpath("./td")]
        for tr in doc.xpath('//*[@id="providers-table"]/tbody/tr')
    ]
    by_header = dict(zip(headers, cells, strict=True))
    assert (by_header["Provider"], by_header["Sent"], by_header["Possibly duplicate"]) == (
        "sendgrid",
        "3",
        "1",
    )
