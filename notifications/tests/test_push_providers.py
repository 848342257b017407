"""Push with the real SDKs against a local server: firebase-admin sends to a fake FCM (its OAuth
token exchange included, through the test credential's ``token_uri``), pywebpush to a fake push
service whose requests the test decrypts with the subscription's private key. Then the whole
pipeline: ``notification_send`` → ``delivery_attempt`` → every device of the user."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading
import time

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pytest_httpserver import HTTPServer
from werkzeug import Response

from analytics.models import Event
from communication.compliance.keyed import lookup_hash
from communication.models import User
from notifications import push, rendering, services
from notifications.models import Delivery, Device, OutboxMessage
from notifications.providers import fcm as fcm_module
from notifications.providers.base import (
    Message,
    PermanentProviderError,
    RateLimitedError,
    TransientProviderError,
)
from notifications.providers.fcm import FcmPushProvider, PushContent
from notifications.providers.webpush import WebPushProvider, b64url, generate_pair
from templates_app import services as template_services

PROJECT = "push-test-project"
FCM_SEND = f"/fcm/v1/projects/{PROJECT}/messages:send"
TOKEN_URI = "/oauth2/token"


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


# ---------------------------------------------------------------------------------- the fakes


@pytest.fixture(scope="module")
def server():
    """A threaded local server: firebase-admin sends one request per token from a thread pool."""
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    yield srv
    srv.clear()
    if srv.is_running():
        srv.stop()


@pytest.fixture
def fake(server):
    server.clear()
    yield server
    server.clear()


class FakeFcm:
    """Plays FCM v1: tokens starting ``dead-`` are UNREGISTERED, ``bad-`` invalid, ``quota-``
    over quota (429 with Retry-After); the rest get a message name."""

    def __init__(self, server: HTTPServer):
        self.server = server
        self.lock = threading.Lock()
        self.sent: list[dict] = []
        self.auth_headers: set[str] = set()
        self.token_exchanges = 0
        server.expect_request(TOKEN_URI, method="POST").respond_with_handler(self._token)
        server.expect_request(FCM_SEND, method="POST").respond_with_handler(self._send)

    def _token(self, request):
        assert request.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        with self.lock:
            self.token_exchanges += 1
        return Response(
            json.dumps({"access_token": "fake-access-token", "expires_in": 3600}),
            content_type="application/json",
        )

    @staticmethod
    def _error(status: int, state: str, code: str, message: str, headers=None):
        details = [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
        ]
        if code == "INVALID_ARGUMENT":
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "message.token", "description": message}],
                }
            )
        body = {"error": {"code": status, "message": message, "status": state, "details": details}}
        return Response(
            json.dumps(body), status=status, content_type="application/json", headers=headers
        )

    def _send(self, request):
        message = request.get_json()["message"]
        token = message["token"]
        with self.lock:
            self.sent.append(message)
            self.auth_headers.add(request.headers.get("Authorization", ""))
        if token.startswith("dead-"):
            return self._error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")
        if token.startswith("bad-"):
            return self._error(
                400,
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
            )
        if token.startswith("quota-"):
            return self._error(
                429,
                "RESOURCE_EXHAUSTED",
                "QUOTA_EXCEEDED",
                "Quota exceeded.",
                headers={"Retry-After": "7"},
            )
        name = f"projects/{PROJECT}/messages/{token}"
        return Response(json.dumps({"name": name}), content_type="application/json")

    def tokens(self) -> list[str]:
        return [m["token"] for m in self.sent]


@pytest.fixture(scope="module")
def service_account() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "test-key-1",
        "private_key": pem,
        "client_email": f"push@{PROJECT}.iam.gserviceaccount.com",
        "client_id": "1",
    }


def fcm_options(server: HTTPServer, service_account: dict) -> dict:
    account = {**service_account, "token_uri": server.url_for(TOKEN_URI)}
    return {"CREDENTIALS": json.dumps(account), "API_URL": server.url_for("/fcm")}


@pytest.fixture
def fcm(fake, service_account):
    fake_fcm = FakeFcm(fake)
    return fake_fcm, FcmPushProvider("fcm", fcm_options(fake, service_account))


class Browser:
    """A browser's side of a subscription: its key pair and auth secret."""

    def __init__(self, endpoint: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.endpoint = endpoint

    @property
    def p256dh(self) -> str:
        return b64url(
            self.key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    def subscription(self) -> dict:
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": self.p256dh, "auth": b64url(self.auth)},
        }

    def decrypt(self, body: bytes) -> bytes:
        return http_ece.decrypt(
            body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )


@pytest.fixture(scope="module")
def vapid() -> dict:
    return generate_pair()


def webpush_options(vapid: dict) -> dict:
    return {
        "VAPID_PRIVATE_KEY": vapid["VAPID_PRIVATE_KEY"],
        "VAPID_PUBLIC_KEY": vapid["VAPID_PUBLIC_KEY"],
        "VAPID_SUBJECT": "mailto:push@example.com",
        "TTL": 3600,
    }


def verify_vapid(request, vapid: dict, endpoint: str) -> dict:
    """Checks the ``Authorization: vapid t=…, k=…`` header as a push service does (RFC 8292)."""
    scheme, _, params = request.headers["Authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert fields["k"] == vapid["VAPID_PUBLIC_KEY"]
    public = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b64url_decode(fields["k"])
    )
    origin = "/".join(endpoint.split("/", 3)[:3])
    claims = jwt.decode(fields["t"], public, algorithms=["ES256"], audience=origin)
    assert claims["sub"] == "mailto:push@example.com"
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    return claims


def received(server: HTTPServer, path: str):
    return [request for request, _ in server.log if request.path == path]


# --------------------------------------------------------------------------------------- FCM


def content(**overrides) -> PushContent:
    values = {
        "title": "Disk almost full",
        "body": "92% used on /var",
        "image": "https://cdn.example.com/disk.png",
        "link": "app://alerts/42",
        "data": {"alert_id": 42, "severity": "warning"},
        "collapse_key": "disk",
        "priority": "high",
        "ttl": 600,
        "badge": 3,
        "category": "alerts",
        "android_channel_id": "alerts",
    }
    values.update(overrides)
    return PushContent(**values)


def test_1200_tokens_go_out_in_three_sdk_calls(fcm, monkeypatch):
    fake_fcm, provider = fcm
    calls = []
    real = fcm_module.messaging.send_each_for_multicast

    def counting(multicast, *args, **kwargs):
        calls.append(len(multicast.tokens))
        return real(multicast, *args, **kwargs)

    monkeypatch.setattr(fcm_module.messaging, "send_each_for_multicast", counting)
    tokens = [f"tok-{i:05d}" for i in range(1200)]

    results = provider.send_multicast(tokens, content())

    assert calls == [500, 500, 200]
    assert [r.token for r in results] == tokens
    assert all(r.ok for r in results)
    assert results[7].message_id == f"projects/{PROJECT}/messages/tok-00007"
    assert sorted(fake_fcm.tokens()) == tokens
    assert fake_fcm.auth_headers == {"Bearer fake-access-token"}
    assert fake_fcm.token_exchanges == 1

    # The per-platform blocks and the data payload, as FCM received them.
    message = fake_fcm.sent[0]
    assert message["notification"] == {
        "title": "Disk almost full",
        "body": "92% used on /var",
        "image": "https://cdn.example.com/disk.png",
    }
    assert message["data"] == {
        "alert_id": "42",
        "severity": "warning",
        "deep_link": "app://alerts/42",
    }
    android = message["android"]
    assert (android["priority"], android["ttl"], android["collapse_key"]) == (
        "high",
        "600s",
        "disk",
    )
    assert android["notification"]["channel_id"] == "alerts"
    aps = message["apns"]["payload"]["aps"]
    assert aps["alert"] == {"title": "Disk almost full", "body": "92% used on /var"}
    assert (aps["sound"], aps["badge"], aps["category"]) == ("default", 3, "alerts")
    headers = message["apns"]["headers"]
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == "disk"


def test_fcm_errors_per_token(fcm):
    _, provider = fcm
    results = provider.send_multicast(["ok-1", "dead-1", "bad-1", "quota-1"], content())
    ok, dead, bad, quota = results
    assert ok.ok
    assert isinstance(dead.error, PermanentProviderError) and dead.error.code == "unregistered"
    assert isinstance(bad.error, PermanentProviderError) and bad.error.code == "invalid_token"
    assert isinstance(quota.error, RateLimitedError)
    assert (quota.error.code, quota.error.retry_after) == ("quota_exceeded", 7.0)


def test_fcm_token_exchange_refused_is_transient(fake, service_account):
    fake.expect_request(TOKEN_URI, method="POST").respond_with_json(
        {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, status=400
    )
    provider = FcmPushProvider("fcm", fcm_options(fake, service_account))
    with pytest.raises(TransientProviderError) as caught:
        provider.send_multicast(["tok-1"], content())
    assert caught.value.code == "auth"
    assert not received(fake, FCM_SEND)


# ----------------------------------------------------------------------------------- Web Push


def test_web_push_is_encrypted_for_the_subscription_and_signed_with_vapid(fake, vapid):
    browser = Browser(fake.url_for("/push/sub-1"))
    fake.expect_request("/push/sub-1", method="POST").respond_with_data(
        "", status=201, headers={"Location": "/push/messages/m-1"}
    )
    provider = WebPushProvider("webpush", webpush_options(vapid))
    payload = json.dumps({"title": "Bonjour", "body": "Ça marche ✓", "data": {"n": 1}})

    result = provider.send_to(
        browser.subscription(), payload, ttl=120, urgency="urgent", topic="disk"
    )

    assert result.provider_message_id == "/push/messages/m-1"
    (request,) = received(fake, "/push/sub-1")
    assert request.headers["Content-Encoding"] == "aes128gcm"
    assert (request.headers["TTL"], request.headers["Urgency"], request.headers["Topic"]) == (
        "120",
        "high",
        "disk",
    )
    assert browser.decrypt(request.get_data()).decode() == payload
    verify_vapid(request, vapid, browser.endpoint)


@pytest.mark.parametrize(
    ("status", "headers", "error", "code"),
    [
        (404, {}, PermanentProviderError, "gone"),
        (410, {}, PermanentProviderError, "gone"),
        (413, {}, PermanentProviderError, "payload_too_large"),
        (429, {"Retry-After": "30"}, RateLimitedError, "rate_limited"),
        (503, {}, TransientProviderError, "unavailable"),
        (400, {}, PermanentProviderError, "webpush_400"),
    ],
)
def test_web_push_errors(fake, vapid, status, headers, error, code):
    browser = Browser(fake.url_for("/push/sub-e"))
    fake.expect_request("/push/sub-e").respond_with_data("no", status=status, headers=headers)
    provider = WebPushProvider("webpush", webpush_options(vapid))
    with pytest.raises(error) as caught:
        provider.send_to(browser.subscription(), '{"title": "x"}')
    assert caught.value.code == code
    if status == 429:
        assert caught.value.retry_after == 30.0
    if status == 413:
        assert "4096" in str(caught.value)


def test_web_push_payload_over_the_limit_is_refused_before_sending(fake, vapid):
    browser = Browser(fake.url_for("/push/sub-big"))
    provider = WebPushProvider("webpush", webpush_options(vapid))
    with pytest.raises(PermanentProviderError, match="3993 bytes") as caught:
        provider.send_to(browser.subscription(), json.dumps({"body": "x" * 4000}))
    assert caught.value.code == "payload_too_large"
    assert not received(fake, "/push/sub-big")


# ----------------------------------------------------------------------------- the pipeline


@pytest.fixture
def push_settings(settings, fake, service_account, vapid):
    providers = dict(settings.NOTIFICATION_PROVIDERS)
    providers["fcm"] = {**providers["fcm"], "OPTIONS": fcm_options(fake, service_account)}
    providers["webpush"] = {**providers["webpush"], "OPTIONS": webpush_options(vapid)}
    settings.NOTIFICATION_PROVIDERS = providers
    settings.PUSH_PROVIDERS = ["fcm", "webpush"]
    settings.DELIVERY_MAX_ATTEMPTS_PER_PROVIDER = 3
    return settings


@pytest.fixture
def carol(db):
    return User.objects.create(
        username="carol", external_id="carol", name="Carole", email="carol@example.com", locale="fr"
    )


def add_devices(user, tokens: list[str], platform: str = "android") -> list[Device]:
    return Device.objects.bulk_create(
        [Device(user=user, platform=platform, token=t) for t in tokens]
    )


def add_browser(user, fake, path: str) -> tuple[Browser, Device]:
    browser = Browser(fake.url_for(path))
    sub = browser.subscription()
    device = Device.objects.create(
        user=user,
        platform="web",
        endpoint=sub["endpoint"],
        p256dh=sub["keys"]["p256dh"],
        auth=sub["keys"]["auth"],
    )
    return browser, device


def send_push(sender, user_id: str, **body) -> str:
    payload = {"recipients": [{"user_id": user_id}], "category": "alerts", "channels": ["push"]}
    payload.update(body)
    response = sender.post("/api/v1/notifications", payload, format="json")
    assert response.status_code == 202, response.content
    (delivery,) = response.json()["notifications"][0]["deliveries"]
    return delivery


def test_push_through_the_pipeline_reaches_every_device(
    push_settings, fake, vapid, sender, carol, django_assert_max_num_queries
):
    fake_fcm = FakeFcm(fake)
    add_devices(carol, ["ios-1"], platform="ios")
    add_devices(carol, ["android-1", "dead-1"])
    browser, web = add_browser(carol, fake, "/push/carol")
    fake.expect_request("/push/carol", method="POST").respond_with_data("", status=201)
    data = {
        "what": "Dentiste",
        "due_at": "2026-03-02T14:00:00Z",
        "action_url": "https://app.example.com/r/7",
    }

    delivery = send_push(sender, "carol", template="reminder", category="reminders", data=data)
    assert delivery["status"] == "queued"
    assert services.delivery_attempt(delivery["id"]) == "sent"

    row = Delivery.objects.get(id=delivery["id"])
    assert (row.status, row.provider) == ("sent", "fcm+webpush")
    results = row.device_results
    by_token = {d.token or "web": str(d.id) for d in Device.objects.filter(user=carol)}
    assert results[by_token["ios-1"]]["status"] == "sent"
    assert results[by_token["android-1"]]["status"] == "sent"
    assert results[by_token["dead-1"]]["status"] == "deactivated"
    assert results[by_token["dead-1"]]["code"] == "unregistered"
    assert results[str(web.id)] | {"at": ""} == {
        "platform": "web",
        "provider": "webpush",
        "status": "sent",
        "message_id": "webpush-201",
        "at": "",
    }
    assert sorted(fake_fcm.tokens()) == ["android-1", "dead-1", "ios-1"]
    dead = Device.objects.get(token_hash=lookup_hash("dead-1", casefold=False))
    assert (dead.active, dead.last_error, dead.failure_count) == (False, "unregistered", 1)

    # What the browser got is the push template rendered in carol's language (French).
    context = rendering.recipient_context(data, user=carol)
    rendered = template_services.template_render(
        key="reminder-push", data=context, locale="fr", timezone=carol.timezone or None
    )
    assert rendered["title"] == "Rappel : Dentiste"
    (request,) = received(fake, "/push/carol")
    payload = json.loads(browser.decrypt(request.get_data()))
    assert payload == {
        "title": rendered["title"],
        "body": rendered["body"],
        "url": "https://app.example.com/r/7",
        "data": {
            "delivery_id": delivery["id"],
            "notification_id": str(row.notification_id),
            "category": "reminders",
        },
    }
    verify_vapid(request, vapid, browser.endpoint)
    # FCM got the same render, with the deep link in its data payload.
    ios = next(m for m in fake_fcm.sent if m["token"] == "ios-1")
    assert ios["notification"] == {"title": rendered["title"], "body": rendered["body"]}
    assert ios["data"]["deep_link"] == "https://app.example.com/r/7"
    sent = Event.objects.get(delivery_id=delivery["id"], type="sent")
    assert sent.data["devices"] == {"sent": 3, "deactivated": 1}

    # The dead token is never used again; the next push goes to the three live devices.
    second = send_push(sender, "carol", content={"title": "Again", "body": "Second"})
    with django_assert_max_num_queries(25):
        assert services.delivery_attempt(second["id"]) == "sent"
    assert fake_fcm.tokens().count("dead-1") == 1
    assert len(received(fake, "/push/carol")) == 2


def test_push_quota_retries_only_the_devices_still_owed(push_settings, fake, sender, carol):
    fake_fcm = FakeFcm(fake)
    add_devices(carol, ["android-ok", "quota-1"])

    delivery = send_push(sender, "carol", content={"title": "T", "body": "B"})
    assert services.delivery_attempt(delivery["id"]) == "retry"
    row = Delivery.objects.get(id=delivery["id"])
    assert row.status == "queued"
    assert row.next_attempt_at >= row.updated_at + dt.timedelta(seconds=6), "Retry-After: 7"
    states = {r["status"] for r in row.device_results.values()}
    assert states == {"sent", "pending"}

    # Quota back: the next attempt sends only to the device that was owed the push.
    fake.clear()
    fake_fcm = FakeFcm(fake)
    Device.objects.filter(token_hash=lookup_hash("quota-1", casefold=False)).update(
        token="later-ok", token_hash=lookup_hash("later-ok", casefold=False)
    )
    Delivery.objects.filter(id=delivery["id"]).update(next_attempt_at=None)
    assert services.delivery_attempt(delivery["id"]) == "sent"
    assert fake_fcm.tokens() == ["later-ok"]
    row.refresh_from_db()
    assert {r["status"] for r in row.device_results.values()} == {"sent"}


def test_push_to_gone_subscription_deactivates_and_fails(push_settings, fake, sender, carol):
    _, device = add_browser(carol, fake, "/push/gone")
    fake.expect_request("/push/gone").respond_with_data("", status=410)

    delivery = send_push(sender, "carol", content={"title": "T", "body": "B"})
    assert services.delivery_attempt(delivery["id"]) == "failed"
    device.refresh_from_db()
    assert not device.active and device.last_error == "gone"
    row = Delivery.objects.get(id=delivery["id"])
    assert row.status == "failed" and "no device took the push" in row.error

    # Without an active device the next request does not even queue a push.
    again = send_push(sender, "carol", content={"title": "T", "body": "B"})
    assert (again["status"], again["reason"]) == ("skipped", "no push device registered")


def test_without_fcm_credentials_fcm_devices_go_to_the_outbox(settings, fake, vapid, sender, carol):
    providers = dict(settings.NOTIFICATION_PROVIDERS)
    providers["fcm"] = {**providers["fcm"], "OPTIONS": {"CREDENTIALS": ""}}
    providers["webpush"] = {**providers["webpush"], "OPTIONS": webpush_options(vapid)}
    settings.NOTIFICATION_PROVIDERS = providers
    add_devices(carol, ["tok-a", "tok-b"])
    browser, _ = add_browser(carol, fake, "/push/real")
    fake.expect_request("/push/real").respond_with_data("", status=201)

    delivery = send_push(sender, "carol", content={"title": "Hello", "body": "Outbox"})
    assert services.delivery_attempt(delivery["id"]) == "sent"

    outbox = OutboxMessage.objects.filter(delivery_id=delivery["id"])
    assert sorted(m.to for m in outbox) == ["tok-a", "tok-b"]
    assert {m.subject for m in outbox} == {"Hello"}
    (request,) = received(fake, "/push/real")  # Web Push still went out for real
    assert json.loads(browser.decrypt(request.get_data()))["body"] == "Outbox"
    row = Delivery.objects.get(id=delivery["id"])
    assert row.provider == "outbox+webpush"


def test_only_the_outbox_means_delivered(settings, sender, carol):
    providers = dict(settings.NOTIFICATION_PROVIDERS)
    providers["fcm"] = {**providers["fcm"], "OPTIONS": {"CREDENTIALS": ""}}
    settings.NOTIFICATION_PROVIDERS = providers
    add_devices(carol, ["tok-only"], platform="ios")
    delivery = send_push(sender, "carol", content={"title": "Hi", "body": "There"})
    assert services.delivery_attempt(delivery["id"]) == "sent"
    row = Delivery.objects.get(id=delivery["id"])
    assert (row.status, row.provider) == ("delivered", "outbox")


def test_push_message_fields_reach_the_fan_out(push_settings, carol):
    """The rendered image and deep link reach the push fan-out."""
    delivery = Delivery(id="00000000-0000-0000-0000-000000000001", priority="high")
    delivery.notification_id = "00000000-0000-0000-0000-000000000002"
    message = Message(
        channel="push",
        to="carol",
        title="T",
        text="B",
        data={"collapse_key": "k", "badge": "2"},
        image="https://i.example/x.png",
        link="app://x",
        category="alerts",
    )
    built = push.content_for(delivery, message)
    assert (built.image, built.link, built.collapse_key, built.badge) == (
        "https://i.example/x.png",
        "app://x",
        "k",
        2,
    )
    assert json.loads(push.web_payload(built))["url"] == "app://x"
