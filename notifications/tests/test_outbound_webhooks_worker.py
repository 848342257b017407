"""Outbound webhooks end to end: a send through the API, a real worker delivering it and
dispatching its events to a local receiver, retries included; a read through the API."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json

import pytest
from django.db import connection
from rest_framework.test import APIClient
from werkzeug import Request, Response

from communication import adb
from communication.auth import tokens
from communication.models import User
from conftest import wait_for
from messaging import services as messaging
from notifications.models import Delivery, WebhookMessage

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PREFIX = "wh-"
ENV = {"WEBHOOKS_ALLOW_PRIVATE": "true", "WEBHOOKS_RETRY_SCHEDULE": "0.2,0.2,0.2,0.2"}


def verify(secret: str, headers, body: bytes) -> bool:
    """The receiving side's check, from the specification: one of the header's v1
    signatures is the HMAC-SHA256 of ``id.timestamp.body`` under the decoded secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['Webhook-Id']}.{headers['Webhook-Timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(part.partition(",")[2], expected)
        for part in headers["Webhook-Signature"].split(" ")
        if part.startswith("v1,")
    )


@pytest.fixture
def worker(start_worker, settings):
    settings.CELERY_QUEUE_PREFIX = PREFIX
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    return start_worker(ENV, PREFIX)


@pytest.fixture
def billing(make_service_token):
    client = APIClient()
    token = make_service_token("billing", ("notifications:send", "webhooks:manage"))
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def receiver(httpserver):
    class Receiver:
        def __init__(self):
            self.answers: list[int] = []
            self.requests: list[tuple[dict, bytes]] = []

        def handle(self, request: Request) -> Response:
            self.requests.append((dict(request.headers), request.get_data()))
            return Response("ok", status=self.answers.pop(0) if self.answers else 200)

        def types(self) -> list[str]:
            return [json.loads(body)["type"] for _, body in self.requests]

    r = Receiver()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(r.handle)
    r.url = httpserver.url_for("/hook")
    return r


def send(client: APIClient, user_id: str, channels=("email",)) -> dict:
    response = client.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": user_id}],
            "category": "alerts",
            "channels": list(channels),
            "content": {"subject": "Hi", "body": "Hello", "title": "Hi"},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()["notifications"][0]


def test_a_failing_endpoint_receives_the_event_once_more_after_three_failures(
    worker, billing, receiver
):
    User.objects.create(username="w1", external_id="w1", email="w1@example.com")
    created = billing.post(
        "/api/v1/webhooks/endpoints",
        {"url": receiver.url, "events": ["delivery.delivered"]},
        format="json",
    ).json()
    receiver.answers = [500, 500, 500]
    notification = send(billing, "w1")
    delivery_id = notification["deliveries"][0]["id"]
    message = wait_for(
        lambda: WebhookMessage.objects.filter(status="delivered").first(), 30, what="delivered"
    )
    assert len(receiver.requests) == 4
    assert message.attempts == 4
    assert {h["Webhook-Id"] for h, _ in receiver.requests} == {message.event_id}
    for headers, body in receiver.requests:
        assert verify(created["secret"], headers, body)
    body = json.loads(receiver.requests[-1][1])
    assert body["type"] == "delivery.delivered"
    assert body["data"]["delivery_id"] == delivery_id
    assert body["data"]["status"] == "delivered"
    assert "w1@example.com" not in receiver.requests[-1][1].decode()


def test_each_state_change_is_one_event_in_order(worker, billing, receiver, make_service_token):
    User.objects.create(username="w2", external_id="w2", email="w2@example.com")
    billing.post(
        "/api/v1/webhooks/endpoints",
        {
            "url": receiver.url,
            "events": ["delivery.sent", "delivery.delivered", "notification.read"],
        },
        format="json",
    )
    # Another service's send: none of its events reach billing's endpoint.
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('shipping')}")
    send(other, "w2")
    notification = send(billing, "w2", channels=("email", "in_app"))
    email = next(d["id"] for d in notification["deliveries"] if d["channel"] == "email")
    wait_for(lambda: Delivery.objects.get(id=email).status == "delivered", 30, what="email")
    wait_for(lambda: len(receiver.requests) >= 2, 30, what="two events")
    reader = APIClient()
    reader.credentials(
        HTTP_AUTHORIZATION=f"Bearer {tokens.issue_user_token(User.objects.get(username='w2'))}"
    )
    response = reader.post(f"/api/v1/notifications/{notification['id']}/read")
    assert response.status_code == 200, response.content
    wait_for(lambda: len(receiver.requests) >= 3, 30, what="the read event")
    assert receiver.types() == ["delivery.sent", "delivery.delivered", "notification.read"]
    datas = [json.loads(body)["data"] for _, body in receiver.requests]
    assert [d.get("delivery_id") for d in datas[:2]] == [email, email]
    assert datas[2]["notification_id"] == notification["id"]
    assert WebhookMessage.objects.count() == 3


def test_a_message_sent_over_the_websocket_path_reaches_a_reader(
    worker, receiver, make_service_token
):
    reader = APIClient()
    token = make_service_token("chat-bot", ("webhooks:manage", "messaging:read"))
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    created = reader.post(
        "/api/v1/webhooks/endpoints",
        {"url": receiver.url, "events": ["message.created"]},
        format="json",
    ).json()
    alice = User.objects.create(username="wa", external_id="wa")
    User.objects.create(username="wb", external_id="wb")
    conversation, _ = messaging.conversation_create(user=alice, type="direct", participants=["wb"])

    async def scenario():
        try:
            return await messaging.message_send_async(
                user=alice, conversation_id=conversation.id, content="on the socket"
            )
        finally:
            await adb.close()

    try:
        message, *_ = asyncio.run(scenario())
    finally:
        connection.close()
    wait_for(lambda: len(receiver.requests) == 1, 30, what="message.created")
    headers, body = receiver.requests[0]
    assert verify(created["secret"], headers, body)
    assert json.loads(body)["data"]["message_id"] == message.id
