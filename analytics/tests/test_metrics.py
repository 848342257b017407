"""``/metrics``: who may read it, what it says, and that it adds up every process's figures."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient
from websockets.sync.client import connect

from analytics.middleware import route_label
from communication.auth import tokens
from communication.models import User
from conftest import ROOT, process_env, wait_for
from notifications.models import Delivery
from notifications.providers import registry
from notifications.services import delivery_attempt

TOKEN = "metrics-" + "x" * 32
INLINE = {"subject": "Hello", "body": "Your code is {{ code }}."}


def parse(body: bytes | str) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition as ``{(name, labels): value}``."""
    text = body.decode() if isinstance(body, bytes) else body
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in samples if n == name]


@pytest.fixture
def scrape(client, settings):
    settings.METRICS_TOKEN = TOKEN

    def get():
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("text/plain; version=")
        return parse(response.content)

    return get


def send(client: APIClient, recipients: list[dict], channels=("email",)) -> list[str]:
    response = client.post(
        "/api/v1/notifications",
        {
            "recipients": recipients,
            "category": "alerts",
            "channels": list(channels),
            "content": INLINE,
            "data": {"code": "4242"},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    return [d["id"] for n in response.json()["notifications"] for d in n["deliveries"]]


# ---------------------------------------------------------------------------------- protection


@pytest.mark.django_db
def test_nobody_reads_the_metrics_when_neither_a_token_nor_addresses_are_set(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = []
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "METRICS_TOKEN" in response.json()["detail"]


@pytest.mark.django_db
def test_the_bearer_token_is_required_and_checked(client, settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = []
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing.json()["code"] == "token_missing"
    assert missing["WWW-Authenticate"] == 'Bearer realm="metrics"'
    wrong = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN[:-1]}y")
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "token_invalid"
    # Not ASCII: refused, not a crash of the constant-time comparison.
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer jéton").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert ok.status_code == 200
    assert parse(ok.content)
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


@pytest.mark.django_db
def test_allowed_addresses_and_networks_read_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = ["192.0.2.7", "10.0.0.0/8", "2001:db8::/32"]
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="2001:db8::1").status_code == 200
    # An IPv4 client seen through a dual-stack socket.
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.1.1.1").status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="192.0.2.8")
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"
    assert client.get("/metrics", REMOTE_ADDR="11.0.0.1").status_code == 403


@pytest.mark.django_db
def test_the_client_address_is_the_one_the_trusted_proxy_saw(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    spoofed = {"REMOTE_ADDR": "203.0.113.5", "HTTP_X_FORWARDED_FOR": "10.0.0.1"}
    settings.TRUSTED_PROXY_COUNT = 0
    assert client.get("/metrics", **spoofed).status_code == 403
    settings.TRUSTED_PROXY_COUNT = 1
    assert client.get("/metrics", **spoofed).status_code == 200
    # Only the entry our proxy appended counts, not what the client put before it.
    forged = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "10.0.0.1, 203.0.113.5"}
    assert client.get("/metrics", **forged).status_code == 403


@pytest.mark.django_db
def test_a_token_or_an_address_each_suffice_when_both_are_set(client, settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.1").status_code == 200
    outside = {"REMOTE_ADDR": "203.0.113.5"}
    assert client.get("/metrics", **outside).status_code == 401
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    assert client.get("/metrics", **outside, **auth).status_code == 200
    # A wrong token is refused even from an allowed address: the scraper is misconfigured.
    wrong = {"HTTP_AUTHORIZATION": "Bearer nope"}
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.1", **wrong).status_code == 401


# --------------------------------------------------------------------------------- HTTP metrics


def test_route_labels_are_the_url_patterns():
    assert route_label("^u/(?P<token>[\\w:.\\-]+)/?$") == "u/<token>"
    assert (
        route_label("api/v1/notifications/(?P<pk>[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12})/?$")
        == "api/v1/notifications/<pk>"
    )
    assert route_label("^\\.well-known/jwks\\.json$") == ".well-known/jwks.json"
    assert route_label("admin/<path:object_id>/change/") == "admin/<path:object_id>/change/"


@pytest.mark.django_db
def test_http_metrics_are_labelled_by_route_not_by_path(client, scrape):
    first, second = uuid.uuid4(), uuid.uuid4()
    route = "api/v1/notifications/<notification_id>"
    labels = {"route": route, "method": "GET", "status": "4xx"}
    before = scrape()
    # No token: 401, on the route the URL matched.
    assert client.get(f"/api/v1/notifications/{first}").status_code == 401
    assert client.get(f"/api/v1/notifications/{second}").status_code == 401
    assert client.get(f"/no/such/page/{first}").status_code == 404
    after = scrape()
    name = "http_request_duration_seconds_count"
    assert value(after, name, **labels) - value(before, name, **labels) == 2
    unmatched = {"route": "unmatched", "method": "GET", "status": "4xx"}
    assert value(after, name, **unmatched) - value(before, name, **unmatched) == 1
    routes = {s["route"] for s in series(after, name)}
    assert not any(str(first) in r or str(second) in r for r in routes), routes
    assert "metrics" in routes  # the scrape itself, counted once it answered
    # The histogram's buckets add up to its count.
    inf = value(after, "http_request_duration_seconds_bucket", **labels, le="+Inf")
    assert inf == value(after, name, **labels)


# ------------------------------------------------------------------------ the send moves figures


@pytest.mark.django_db
def test_a_send_and_its_delivery_move_the_counters(service_client, scrape):
    User.objects.create(username="m1", external_id="m1", email="m1@example.com")
    before = scrape()
    [delivery_id] = send(service_client, [{"user_id": "m1"}])
    # The worker's path, in this process (tests without a worker call it as the task would).
    assert delivery_attempt(delivery_id) == "sent"
    after = scrape()

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    deliveries = "notifications_deliveries_total"
    assert moved(deliveries, channel="email", provider="", status="queued") == 1
    assert moved(deliveries, channel="email", provider="outbox", status="sent") == 1
    assert moved(deliveries, channel="email", provider="outbox", status="delivered") == 1
    latency = "notifications_provider_latency_seconds_count"
    assert moved(latency, channel="email", provider="outbox", outcome="accepted") == 1
    send_route = {"route": "api/v1/notifications", "method": "POST", "status": "2xx"}
    assert moved("http_request_duration_seconds_count", **send_route) == 1
    assert value(after, "metrics_collector_up", collector="notifications") == 1


@pytest.mark.django_db
def test_the_collectors_read_the_backlog_in_a_fixed_number_of_queries(service_client, scrape):
    base = value(scrape(), "notifications_deliveries_queued")
    # Queued, never enqueued: this test's transaction never commits.
    send(service_client, [{"email": f"few{i}@example.com"} for i in range(2)])
    with CaptureQueriesContext(connection) as few:
        small = scrape()
    send(service_client, [{"email": f"many{i}@example.com"} for i in range(40)])
    with CaptureQueriesContext(connection) as many:
        large = scrape()
    assert value(small, "notifications_deliveries_queued") == base + 2
    assert value(large, "notifications_deliveries_queued") == base + 42
    assert value(large, "notifications_oldest_queued_seconds") >= 0
    assert len(few) == len(many) == 1, [q["sql"] for q in many]
    assert {s["queue"] for s in series(large, "notifications_broker_queue_messages")} == set(
        django_settings.QUEUE_NAMES
    )


@pytest.mark.django_db
def test_breaker_states_are_reported_per_configured_provider(scrape, settings):
    settings.SMS_PROVIDERS = ["twilio"]
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "twilio": {
            **settings.NOTIFICATION_PROVIDERS["twilio"],
            "OPTIONS": {
                **settings.NOTIFICATION_PROVIDERS["twilio"]["OPTIONS"],
                "ACCOUNT_SID": "AC" + "0" * 32,
                "AUTH_TOKEN": "secret",
                "FROM": "+15005550006",
            },
        },
    }
    name = "notifications_provider_breaker_state"
    closed = scrape()
    assert value(closed, name, channel="sms", provider="twilio", state="closed") == 1
    assert value(closed, name, channel="sms", provider="twilio", state="open") == 0
    breaker = registry.provider_breaker("twilio")
    for _ in range(settings.PROVIDER_BREAKER_THRESHOLD):
        breaker.record_failure()
    opened = scrape()
    assert value(opened, name, channel="sms", provider="twilio", state="open") == 1
    assert value(opened, name, channel="sms", provider="twilio", state="closed") == 0


# ------------------------------------------------------------------------------- every process


def scrape_live(url: str) -> dict:
    request = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return parse(response.read())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_live_server_reports_what_the_worker_counted(
    start_live_asgi, celery_worker, make_service_token
):
    server = start_live_asgi({"METRICS_TOKEN": TOKEN})
    user = User.objects.create(username="mx", external_id="mx", email="mx@example.com")
    before = scrape_live(server.url)
    request = urllib.request.Request(
        f"{server.url}/api/v1/notifications",
        data=json.dumps(
            {
                "recipients": [{"user_id": "mx"}],
                "category": "alerts",
                "channels": ["email"],
                "content": INLINE,
                "data": {"code": "1"},
            }
        ).encode(),
        headers={
            "Authorization": f"Bearer {make_service_token()}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        [delivery_id] = [
            d["id"] for n in json.loads(response.read())["notifications"] for d in n["deliveries"]
        ]
    wait_for(
        lambda: Delivery.objects.filter(id=delivery_id, status="delivered").exists(),
        30,
        what="the worker to deliver",
    )
    after = scrape_live(server.url)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    # Counted by the worker, read through the web server: the worker's own file holds it.
    delivered = {"channel": "email", "provider": "outbox", "status": "delivered"}
    assert moved("notifications_deliveries_total", **delivered) == 1
    assert (django_settings.PROMETHEUS_MULTIPROC_DIR / f"counter_{celery_worker.pid}.db").exists()
    # Counted by the web server itself.
    assert moved("notifications_deliveries_total", channel="email", provider="", status="queued")
    send_route = {"route": "api/v1/notifications", "method": "POST", "status": "2xx"}
    assert moved("http_request_duration_seconds_count", **send_route) == 1

    # The gateway's sockets, counted by the server holding them.
    sockets = "messaging_websocket_connections"
    with connect(f"{server.ws_url}/ws/v1/?token={tokens.issue_user_token(user)}") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        assert value(scrape_live(server.url), sockets) == value(before, sockets) + 1
    wait_for(
        lambda: value(scrape_live(server.url), sockets) == value(before, sockets),
        10,
        what="the socket to be counted off",
    )


@pytest.mark.django_db
def test_a_dead_process_keeps_its_counts_but_not_its_open_sockets(scrape):
    before = scrape()
    code = (
        "import django; django.setup()\n"
        "from messaging.metrics import websocket_connections\n"
        "from notifications.metrics import deliveries_count\n"
        "websocket_connections().inc(7)\n"
        "deliveries_count([('sms', 'ghost', 'sent')] * 3)\n"
    )
    env = process_env(DJANGO_SETTINGS_MODULE="communication.settings")
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr.decode()[-2000:]
    folder = django_settings.PROMETHEUS_MULTIPROC_DIR
    assert (folder / f"gauge_livesum_{child.pid}.db").exists()
    after = scrape()
    ghost = {"channel": "sms", "provider": "ghost", "status": "sent"}
    deliveries = "notifications_deliveries_total"
    assert value(after, deliveries, **ghost) == value(before, deliveries, **ghost) + 3
    sockets = "messaging_websocket_connections"
    assert value(after, sockets) == value(before, sockets)
    assert not (folder / f"gauge_livesum_{child.pid}.db").exists()
    assert (folder / f"counter_{child.pid}.db").exists()
