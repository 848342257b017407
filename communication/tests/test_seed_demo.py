"""``manage.py seed_demo`` and ``GET /app/demo-users``: the demo data a developer sees after
``make run``, made twice to the same result, read back through the console, the analytics API
and a demo user's own token."""

from __future__ import annotations

import io

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from lxml import html
from rest_framework.test import APIClient

from communication.models import User

pytestmark = pytest.mark.django_db

COUNTED = [
    "communication.User",
    "notifications.NotificationRequest",
    "notifications.Notification",
    "notifications.Delivery",
    "messaging.Conversation",
    "messaging.Participant",
    "messaging.Message",
    "campaigns.Campaign",
    "campaigns.CampaignRun",
    "campaigns.CampaignRecipient",
    "analytics.Event",
    "analytics.Rollup",
]


@pytest.fixture(autouse=True)
def _nobody_consumes(settings):
    # Whatever the seed enqueues goes to queues no worker of the test run reads.
    settings.CELERY_QUEUE_PREFIX = "seed-demo-nobody-"


def counts() -> dict[str, int]:
    return {name: apps.get_model(name).objects.count() for name in COUNTED}


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_demo_twice_and_the_data_shows(client, make_service_token):
    first = seed()
    assert "/app/" in first and "demo-ada" in first
    once = counts()
    assert all(once.values()), once
    read = {
        n: r
        for n, r in apps.get_model("notifications.Notification").objects.values_list(
            "id", "read_at"
        )
    }
    seed()
    assert counts() == once
    # Read marks are not made again (nor moved).
    assert (
        dict(apps.get_model("notifications.Notification").objects.values_list("id", "read_at"))
        == read
    )
    campaign = apps.get_model("campaigns.Campaign").objects.get()
    assert campaign.status == "completed"

    # The console's dashboard charts the sends.
    admin = User.objects.create_superuser(username="ops", email="ops@example.com", password="pw")
    client.force_login(admin)
    doc = html.fromstring(client.get("/admin/").content.decode())
    (sends,) = doc.xpath('//section[@data-panel="notifications.sends"]')
    assert sends.xpath(".//canvas"), "No sends charted"

    # The analytics report counts two weeks of deliveries from the rollups.
    service = APIClient()
    service.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_service_token('console', ['analytics:read'])}"
    )
    report = service.get("/api/v1/analytics/delivery", {"granularity": "day"}).json()
    assert report["totals"]["delivered"] > 50, report["totals"]
    assert len({point["bucket"] for point in report["series"]}) >= 10

    # A demo user's token (from the endpoint) reads their inbox: unread items and history.
    users = client.get("/app/demo-users").json()
    assert [u["user_id"] for u in users] == sorted(
        ["demo-ada", "demo-alan", "demo-grace", "demo-hedy", "demo-marie"]
    )
    ada = next(u for u in users if u["user_id"] == "demo-ada")
    assert ada["name"] == "Ada Lovelace"
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ada['token']}")
    unread = api.get("/api/v1/notifications/unread").json()
    assert unread["count"] > 0
    conversations = api.get("/api/v1/conversations").json()
    assert len(conversations["results"]) == 2


def test_demo_users_are_development_only(client, settings, make_user_token):
    make_user_token("alice")  # a real user is never listed
    seed_users = ["demo-x"]
    User.objects.create(username="demo-x", external_id="demo-x", name="X")
    response = client.get("/app/demo-users")
    assert response.status_code == 200
    assert [u["user_id"] for u in response.json()] == seed_users

    settings.IDENTITY_API_URL = "https://identity.example"
    assert client.get("/app/demo-users").status_code == 404
    with pytest.raises(CommandError):
        seed()
    settings.IDENTITY_API_URL = ""
    settings.IDENTITY_JWKS_URL = "https://identity.example/jwks.json"
    assert client.get("/app/demo-users").status_code == 404
    settings.IDENTITY_JWKS_URL = ""
    settings.APP_ENV = "production"
    settings.DEVELOPMENT = False
    assert client.get("/app/demo-users").status_code == 404
