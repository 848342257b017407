"""Outbound webhooks: the endpoints API (validation, isolation between services, SSRF), signing
and secret rotation, retries, dead letters, auto-disable and ordering — the dispatcher runs in
this process against a local receiver (pytest-httpserver)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging

import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from werkzeug import Request, Response

from communication.models import AuditEntry, User
from conftest import wait_for
from messaging import services as messaging
from notifications import services
from notifications.models import Delivery, WebhookEndpoint, WebhookMessage
from notifications.services import webhooks
from notifications.tracking import TrackingEvent
from notifications.unsubscribe import read_token, token_for

pytestmark = pytest.mark.django_db

SCOPES = ("notifications:send", "webhooks:manage")
URL = "/api/v1/webhooks/endpoints"


def verify(secret: str, headers, body: bytes) -> list[bool]:
    """The receiving side's check, written here from the specification (not our signer): for
    each signature of the header, whether ``secret`` made it."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['Webhook-Id']}.{headers['Webhook-Timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    found = []
    for part in headers["Webhook-Signature"].split(" "):
        version, _, signature = part.partition(",")
        found.append(version == "v1" and hmac.compare_digest(signature, expected))
    return found


@pytest.fixture
def service(make_service_token):
    def make(client_id: str = "billing", scopes=SCOPES) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token(client_id, scopes)}")
        return client

    return make


@pytest.fixture
def private_ok(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    settings.WEBHOOKS_RETRY_SCHEDULE = [0.05, 0.05, 0.05]
    settings.CELERY_QUEUE_PREFIX = "whunit-"  # the retries' dispatch tasks reach no worker


@pytest.fixture
def receiver(httpserver):
    """The receiving service: records each request; ``answers`` (a list of status codes) are
    used up in order, then 200."""

    class Receiver:
        answers: list[int] = []
        requests: list[tuple[dict, bytes]] = []

        def handle(self, request: Request) -> Response:
            self.requests.append((dict(request.headers), request.get_data()))
            status = self.answers.pop(0) if self.answers else 200
            return Response("ok", status=status)

        def bodies(self) -> list[dict]:
            return [json.loads(body) for _, body in self.requests]

    r = Receiver()
    r.answers, r.requests = [], []
    httpserver.expect_request("/hook", method="POST").respond_with_handler(r.handle)
    r.url = httpserver.url_for("/hook")
    return r


def register(client: APIClient, url: str, events=("delivery.failed",)) -> dict:
    response = client.post(URL, {"url": url, "events": list(events)}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def emit(caller: str = "billing", type_: str = "delivery.failed", key: str = "", **data):
    return webhooks.emit([webhooks.Event(type=type_, caller=caller, data=data, ordering_key=key)])


def dispatch_until(predicate, what: str):
    def step():
        webhooks.messages_dispatch()
        return predicate()

    return wait_for(step, 10, interval=0.02, what=what)


# ------------------------------------------------------------------------------------ the API


def test_register_shows_the_secret_once_and_lists_without_it(service, private_ok, receiver):
    client = service()
    created = register(client, receiver.url, ["delivery.sent", "delivery.failed"])
    assert set(created) >= {"id", "url", "events", "secret"}
    assert created["secret"].startswith("whsec_")
    assert 24 <= len(base64.b64decode(created["secret"][6:])) <= 32
    listed = client.get(URL).json()["results"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0] and "secret" not in client.get(f"{URL}/{created['id']}").json()
    assert AuditEntry.objects.filter(action="webhook_endpoint.create").count() == 1


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1:9/hook", "webhook_url_not_allowed"),
        ("http://localhost/hook", "webhook_url_not_allowed"),
        ("http://10.1.2.3/hook", "webhook_url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data", "webhook_url_not_allowed"),
        ("http://[::1]/hook", "webhook_url_not_allowed"),
        ("http://[::ffff:127.0.0.1]/hook", "webhook_url_not_allowed"),
        ("http://0.0.0.0/hook", "webhook_url_not_allowed"),
        ("http://224.0.0.1/hook", "webhook_url_not_allowed"),
        ("ftp://example.com/hook", "webhook_url_invalid"),
        # NUL is refused by the API's parser, before any view (its own code).
        ("http://example.com/\x00", "validation_error"),
        ("https://example.com/" + "a" * 10_000, "webhook_url_invalid"),
        (42, "webhook_url_invalid"),
    ],
)
def test_urls_refused_by_default(service, url, code):
    response = service().post(URL, {"url": url, "events": ["delivery.sent"]}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    ("events", "code"),
    [
        (["delivery.exploded"], "webhook_event_unknown"),
        (["delivery.sent\x00"], "validation_error"),
        (["delivery.sent"] * 1000, "webhook_events_invalid"),
        ([], "webhook_events_invalid"),
        ("delivery.sent", "webhook_events_invalid"),
        (["message.created"], "webhook_event_scope"),
        (["campaign.completed"], "webhook_event_scope"),
    ],
)
def test_events_validated(service, private_ok, receiver, events, code):
    response = service().post(URL, {"url": receiver.url, "events": events}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code


def test_a_caller_less_event_needs_the_scope_that_reads_its_data(service, private_ok, receiver):
    reader = service("chat-bot", (*SCOPES, "messaging:read"))
    register(reader, receiver.url, ["message.created"])
    register(service("billing"), receiver.url, ["delivery.sent"])
    written = webhooks.emit(
        [webhooks.Event(type="message.created", data={"message_id": 1}, caller=None)]
    )
    assert written == 1
    assert WebhookMessage.objects.get().endpoint.owner == "chat-bot"


def test_another_service_cannot_see_change_or_replay_an_endpoint(service, private_ok, receiver):
    owner, other = service("billing"), service("shipping")
    endpoint = register(owner, receiver.url)
    emit(delivery_id="d1")
    message = WebhookMessage.objects.get()
    base = f"{URL}/{endpoint['id']}"
    assert other.get(URL).json()["results"] == []
    assert other.get(base).status_code == 404
    assert other.patch(base, {"url": receiver.url}, format="json").status_code == 404
    assert other.post(f"{base}/rotate-secret").status_code == 404
    assert other.get(f"{base}/messages").status_code == 404
    assert other.post(f"{base}/messages/{message.event_id}/replay").status_code == 404
    assert other.delete(base).status_code == 404
    assert WebhookEndpoint.objects.filter(id=endpoint["id"]).exists()
    # Nor does it receive the owner's events.
    register(other, receiver.url)
    emit(caller="billing", delivery_id="d2")
    assert set(WebhookMessage.objects.values_list("endpoint__owner", flat=True)) == {"billing"}


def test_scope_required(service, private_ok, receiver):
    client = service("billing", ("notifications:send",))
    response = client.post(URL, {"url": receiver.url, "events": ["delivery.sent"]}, format="json")
    assert response.status_code == 403


# ------------------------------------------------------------------------------- delivering


def test_signed_request_retried_until_accepted(service, private_ok, receiver):
    secret = register(service(), receiver.url)["secret"]
    receiver.answers = [500, 503, 502]
    emit(delivery_id="d1", status="failed")
    message = WebhookMessage.objects.get()
    dispatch_until(
        lambda: WebhookMessage.objects.get(pk=message.pk).status == "delivered", "delivered"
    )
    assert len(receiver.requests) == 4
    ids = {headers["Webhook-Id"] for headers, _ in receiver.requests}
    assert ids == {message.event_id} and message.event_id.startswith("msg_")
    for headers, body in receiver.requests:
        assert verify(secret, headers, body) == [True]
        assert abs(int(headers["Webhook-Timestamp"]) - timezone.now().timestamp()) < 60
    body = receiver.bodies()[-1]
    assert body["type"] == "delivery.failed"
    assert body["data"] == {"delivery_id": "d1", "status": "failed"}
    assert dt.datetime.fromisoformat(body["created_at"])
    log = service().get(f"{URL}/{message.endpoint_id}/messages").json()["results"][0]
    assert [a["status_code"] for a in log["log"]] == [200, 502, 503, 500]
    assert all(a["latency_ms"] >= 0 for a in log["log"])


def test_rotated_secret_both_signatures_during_the_overlap(service, private_ok, receiver):
    client = service()
    created = register(client, receiver.url)
    old = created["secret"]
    rotated = client.post(f"{URL}/{created['id']}/rotate-secret")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_")
    emit(delivery_id="d1")
    dispatch_until(lambda: len(receiver.requests) == 1, "request")
    headers, body = receiver.requests[0]
    assert len(headers["Webhook-Signature"].split(" ")) == 2
    assert verify(new, headers, body) == [True, False]
    assert verify(old, headers, body) == [False, True]
    # Past the overlap, the old secret signs no more.
    WebhookEndpoint.objects.filter(id=created["id"]).update(
        previous_secret_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    emit(delivery_id="d2")
    dispatch_until(lambda: len(receiver.requests) == 2, "second request")
    headers, body = receiver.requests[1]
    assert verify(new, headers, body) == [True]
    assert verify(old, headers, body) == [False]
    assert AuditEntry.objects.filter(action="webhook_endpoint.rotate_secret").count() == 1


def test_a_private_address_is_refused_at_delivery_time(service, settings, private_ok, receiver):
    register(service(), receiver.url)
    emit(delivery_id="d1")
    settings.WEBHOOKS_ALLOW_PRIVATE = False  # e.g. the name now resolves to a private address
    message = WebhookMessage.objects.get()
    dispatch_until(lambda: WebhookMessage.objects.get(pk=message.pk).status == "dead", "dead")
    assert receiver.requests == []
    errors = set(message.attempts_log.values_list("error", flat=True))
    assert all(e.startswith("not allowed") for e in errors), errors


def test_dead_letter_after_the_schedule_then_replay(service, private_ok, receiver):
    client = service()
    endpoint = register(client, receiver.url)
    receiver.answers = [500] * 4
    emit(delivery_id="d1")
    message = WebhookMessage.objects.get()
    dispatch_until(lambda: WebhookMessage.objects.get(pk=message.pk).status == "dead", "dead")
    assert len(receiver.requests) == 4  # the first attempt and the schedule's three retries
    message.refresh_from_db()
    assert message.attempts == 4 and message.last_status_code == 500
    # Replayed from the API: the same Webhook-Id, delivered.
    response = client.post(f"{URL}/{endpoint['id']}/messages/{message.event_id}/replay")
    assert response.status_code == 202, response.content
    dispatch_until(
        lambda: WebhookMessage.objects.get(pk=message.pk).status == "delivered", "replayed"
    )
    assert receiver.requests[-1][0]["Webhook-Id"] == message.event_id
    assert AuditEntry.objects.filter(action="webhook_endpoint.replay").count() == 1
    # And everything since a time.
    response = client.post(
        f"{URL}/{endpoint['id']}/replay",
        {"since": (timezone.now() - dt.timedelta(hours=1)).isoformat()},
        format="json",
    )
    assert response.json() == {"replayed": 1}
    bad = client.post(f"{URL}/{endpoint['id']}/replay", {"since": "yesterday\x00"}, format="json")
    assert bad.status_code == 400


def test_an_endpoint_that_keeps_failing_is_disabled(
    service, settings, private_ok, receiver, caplog
):
    settings.WEBHOOKS_DISABLE_AFTER_FAILURES = 3
    client = service()
    endpoint = register(client, receiver.url)
    receiver.answers = [500] * 10
    emit(delivery_id="d1", key="a")
    emit(delivery_id="d2", key="b")
    with caplog.at_level(logging.WARNING, logger="notifications.services.webhooks"):
        dispatch_until(
            lambda: WebhookEndpoint.objects.get(id=endpoint["id"]).disabled_at is not None,
            "disabled",
        )
    shown = client.get(f"{URL}/{endpoint['id']}").json()
    assert shown["enabled"] is False
    assert "3 consecutive failed attempts" in shown["disabled_reason"]
    assert any("webhook endpoint disabled" in r.message for r in caplog.records)
    assert AuditEntry.objects.filter(action="webhook_endpoint.disable").count() == 1
    # Nothing more is sent to it; re-enabled, what waited goes out.
    sent = len(receiver.requests)
    webhooks.messages_dispatch()
    assert len(receiver.requests) == sent
    receiver.answers = []
    response = client.patch(f"{URL}/{endpoint['id']}", {"enabled": True}, format="json")
    assert response.json()["enabled"] is True
    dispatch_until(
        lambda: not WebhookMessage.objects.exclude(status="delivered").exists(), "delivered"
    )


def test_in_order_per_key_without_blocking_other_keys(service, private_ok, receiver):
    register(service(), receiver.url)
    receiver.answers = [500]
    emit(delivery_id="first", key="delivery:1")
    emit(delivery_id="second", key="delivery:1")
    emit(delivery_id="other", key="delivery:2")
    webhooks.messages_dispatch()
    # The first failed: the second of its key waits, the other key's went out.
    assert [b["data"]["delivery_id"] for b in receiver.bodies()] == ["first", "other"]
    dispatch_until(
        lambda: not WebhookMessage.objects.exclude(status="delivered").exists(), "delivered"
    )
    order = [b["data"]["delivery_id"] for b in receiver.bodies()]
    assert order == ["first", "other", "first", "second"]


def test_a_caller_without_endpoints_costs_one_statement_and_writes_nothing(
    django_assert_num_queries,
):
    with django_assert_num_queries(1):
        assert emit(delivery_id="d1") == 0
    assert not WebhookMessage.objects.exists()


def test_a_message_goes_to_services_that_may_read_messages(service, private_ok, receiver):
    reader = register(
        service("chat-bot", (*SCOPES, "messaging:read")), receiver.url, ["message.created"]
    )
    alice = User.objects.create(username="ma", external_id="ma")
    User.objects.create(username="mb", external_id="mb")
    conversation, _ = messaging.conversation_create(user=alice, type="direct", participants=["mb"])
    message, created = messaging.message_send(
        user=alice, conversation_id=conversation.id, content="secret plans"
    )
    assert created
    found = WebhookMessage.objects.get()
    assert str(found.endpoint_id) == reader["id"]
    assert found.ordering_key == f"conversation:{conversation.id}"
    dispatch_until(lambda: len(receiver.requests) == 1, "message.created")
    body = receiver.bodies()[0]
    assert body["type"] == "message.created"
    assert body["data"] == {
        "message_id": message.id,
        "parent_id": None,
        "conversation_id": str(conversation.id),
        "type": "text",
    }
    assert "secret plans" not in receiver.requests[0][1].decode()


def test_provider_reports_and_unsubscribes_reach_the_sender_once(service, private_ok, receiver):
    register(
        service("billing"),
        receiver.url,
        ["delivery.delivered", "delivery.bounced", "unsubscribe"],
    )
    register(service("shipping"), receiver.url, ["delivery.delivered", "unsubscribe"])
    outcome = services.notification_send(
        caller="billing",
        idempotency_key="",
        payload={
            "recipients": [{"email": "p@example.com"}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Hi", "body": "Hello"},
            "data": {},
        },
    )
    delivery_id = outcome.body["notifications"][0]["deliveries"][0]["id"]
    Delivery.objects.filter(id=delivery_id).update(
        status="sent", provider="sendgrid", provider_message_id="pm-1"
    )
    now = timezone.now()
    report = TrackingEvent(
        provider="sendgrid",
        provider_message_id="pm-1",
        event="delivered",
        occurred_at=now,
        event_id="ev-1",
    )
    services.delivery_track(report)
    services.delivery_track(report)  # the provider's retry of the same event
    services.delivery_track(
        TrackingEvent(
            provider="sendgrid",
            provider_message_id="pm-1",
            event="bounced",
            occurred_at=now,
            event_id="ev-2",
            bounce="soft",
        )
    )
    delivery = Delivery.objects.select_related("notification").get(id=delivery_id)
    payload = read_token(token_for(delivery))
    assert payload is not None
    services.unsubscribe_apply(payload, source="one-click")
    written = list(
        WebhookMessage.objects.order_by("id").values_list("endpoint__owner", "event_type")
    )
    assert written == [
        ("billing", "delivery.delivered"),
        ("billing", "delivery.bounced"),
        ("billing", "unsubscribe"),
    ]
    data = WebhookMessage.objects.get(event_type="unsubscribe").payload["data"]
    assert data["delivery_id"] == delivery_id and data["channel"] == "email"
    assert "p@example.com" not in json.dumps(
        list(WebhookMessage.objects.values_list("payload", flat=True))
    )


def test_the_log_forgets_finished_messages_past_its_retention(
    service, settings, private_ok, receiver
):
    settings.WEBHOOKS_LOG_RETENTION_DAYS = 30
    register(service(), receiver.url)
    emit(delivery_id="old-delivered")
    emit(delivery_id="old-pending")
    emit(delivery_id="recent")
    dispatch_until(lambda: len(receiver.requests) == 3, "three requests")
    old = timezone.now() - dt.timedelta(days=31)
    WebhookMessage.objects.filter(payload__data__delivery_id__startswith="old").update(
        created_at=old
    )
    WebhookMessage.objects.filter(payload__data__delivery_id="old-pending").update(
        status="pending", next_attempt_at=timezone.now() + dt.timedelta(hours=1)
    )
    assert webhooks.webhooks_prune() == 1
    left = set(WebhookMessage.objects.values_list("payload__data__delivery_id", flat=True))
    assert left == {"old-pending", "recent"}
