"""Object-level access: every route that takes an object's id answers another principal's id
exactly as it answers an id that does not exist (404, same body).

The routes come from the URL resolver, so a new route with an id is covered as soon as it exists:
its id's name must be in ``OWNED`` (whose object it is, and how to make one) or in ``SHARED``
(why it is not anyone's), or the first test fails.
"""

from __future__ import annotations

import base64
import io
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver
from PIL import Image
from rest_framework.test import APIClient

from communication.auth import tokens
from communication.models import Organization, User
from notifications.models import WebhookMessage

pytestmark = pytest.mark.django_db

# The id's name in the URL -> who owns such an object ("user": bob, "service": the billing service).
OWNED = {
    "conversation_id": "user",
    "message_id": "user",
    "attachment_id": "user",
    "device_id": "user",
    "notification_id": "user",
    "request_id": "service",
    "batch_id": "service",
    "endpoint_id": "service",
    "event_id": "service",
    # Its members' (and their ancestors' members'): bob's organization, which alice is not in.
    # GET /organizations/{id} and POST /organizations/{id}/broadcast (a user's send to it).
    "organization_id": "user",
}
# Ids that name what belongs to no user or service, and what guards them instead.
SHARED = {
    "key": "a template: shared by the services with templates:* scopes",
    "version_id": "a template version: shared by the services with templates:* scopes",
    "segment_id": "a segment: shared by the services with campaigns:manage (and staff)",
    "campaign_id": "a campaign: shared by the services with campaigns:manage (and staff)",
    "token": "the unsubscribe link: the token is signed, the page names no account",
    "action": "a verb (submit, approve, reject), not an id",
    "erasure_id": "an erasure's status: shared by the services with compliance:manage",
    "user_id": "a user's directory entry (services with users:read) or a participant of a "
    "conversation (checked through the conversation's id)",
}
# Routes whose id is the caller's own name for a thing of theirs, scoped to the caller: the same id
# from another user names that user's own (see test_a_device_key_id_names_the_callers_own_device).
CALLERS_OWN = ("keys/devices/",)
# The body each method sends: valid enough that a view checking its input first would accept it,
# so the answer comes from the object lookup.
BODIES: dict[str, dict[str, Any]] = {
    "post": {"content": "hello", "user_id": "alice", "message_id": 1, "muted": True},
    "put": {"content": "hello"},
    "patch": {"title": "mine now", "content": "hello", "scheduled_at": "2099-01-01T00:00:00Z"},
    "delete": {},
    "get": {},
}


# The attachment download is a signed link without a token: a link not signed for this caller is
# refused (403) whether the attachment exists or not.
STATUS = {"download": 403}


def routes() -> Iterator[tuple[str, URLPattern]]:
    def walk(patterns, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern

    for route, pattern in walk(get_resolver().url_patterns):
        if "(?P<" in route and not route.startswith("admin/"):
            yield route, pattern


def resolve_pattern(route: str):
    return next(pattern.callback for r, pattern in routes() if r == route)


def id_names(route: str) -> list[str]:
    return re.findall(r"\(\?P<(\w+)>", route)


def build(route: str, values: dict[str, str]) -> str:
    """The route's path with each named group replaced by its value."""
    path = route.replace("^", "").replace("/?$", "").replace("$", "")
    for name, value in values.items():
        path = re.sub(r"\(\?P<" + name + r">[^()]*(\([^()]*\)[^()]*)*\)", value, path, count=1)
    return "/" + path


def client_for(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 0, 255)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def world(make_service_token, settings) -> dict[str, Any]:
    """Bob's objects and the billing service's, made through the API, and the two intruders."""
    Organization.objects.create(id="bob-org", name="Bob's")
    users = {
        name: User.objects.create(
            username=name,
            external_id=name,
            email=f"{name}@example.com",
            organization="" if name == "alice" else "bob-org",
        )
        for name in ("alice", "bob", "carol")
    }
    bob = client_for(tokens.issue_user_token(users["bob"]))
    billing = client_for(make_service_token("billing", ["notifications:send", "webhooks:manage"]))
    settings.WEBHOOKS_ALLOW_PRIVATE = True  # the endpoint is never called: on_commit never runs
    endpoint = billing.post(
        "/api/v1/webhooks/endpoints",
        {"url": "http://127.0.0.1:9/hooks", "events": ["notification.read"]},
        format="json",
    )
    assert endpoint.status_code == 201, endpoint.content

    conversation = bob.post(
        "/api/v1/conversations", {"type": "group", "participants": ["carol"]}, format="json"
    )
    assert conversation.status_code == 201, conversation.content
    conversation_id = conversation.json()["id"]
    message = bob.post(
        f"/api/v1/conversations/{conversation_id}/messages", {"content": "hi"}, format="json"
    )
    assert message.status_code == 201, message.content
    attachment = bob.post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile("a.png", png(), content_type="image/png")},
        format="multipart",
    )
    assert attachment.status_code == 201, attachment.content
    device = bob.post(
        "/api/v1/devices",
        {"platform": "ios", "token": "bob-device-token", "app_id": "com.example.app"},
        format="json",
    )
    assert device.status_code == 201, device.content
    sent = billing.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "bob"}],
            "category": "alerts",
            "channels": ["in_app"],
            "content": {"title": "Hello", "body": "Hello"},
        },
        format="json",
    )
    assert sent.status_code == 202, sent.content
    batch = billing.post(
        "/api/v1/notifications/bulk",
        {"recipients": [{"user_id": "bob"}], "content": {"title": "Hello", "body": "Hello"}},
        format="json",
    )
    assert batch.status_code == 202, batch.content
    notification_id = sent.json()["notifications"][0]["id"]
    # Bob reads it: billing's endpoint gets a message (a replay's id).
    assert bob.put(f"/api/v1/notifications/{notification_id}/read").status_code == 200
    event_id = WebhookMessage.objects.get(endpoint_id=endpoint.json()["id"]).event_id
    return {
        "ids": {
            "conversation_id": conversation_id,
            "message_id": str(message.json()["id"]),
            "attachment_id": attachment.json()["id"],
            "device_id": str(device.json()["id"]),
            "notification_id": sent.json()["notifications"][0]["id"],
            "request_id": sent.json()["request_id"],
            "batch_id": batch.json()["batch_id"],
            "endpoint_id": endpoint.json()["id"],
            "event_id": event_id,
            "organization_id": "bob-org",
            # With bob's conversation: one of its members.
            "user_id": "carol",
        },
        "intruder": {
            "user": client_for(tokens.issue_user_token(users["alice"])),
            "service": client_for(
                make_service_token(
                    "intruder", ["notifications:send", "notifications:read", "webhooks:manage"]
                )
            ),
        },
    }


def missing_id(name: str, value: str) -> str:
    """An id of the same shape as ``value`` that names nothing."""
    if value.isdigit():
        return str(10**12 + 7)
    if name == "user_id":
        return "nobody-at-all"
    if name == "event_id":
        return "msg_" + uuid.uuid4().hex
    return str(uuid.uuid4())


def test_every_route_with_an_id_is_classified():
    unknown = {
        (route, name)
        for route, _ in routes()
        for name in id_names(route)
        if name not in OWNED and name not in SHARED
    }
    assert not unknown, "add each id to OWNED (with an object in `world`) or SHARED (with why)"


def owned_routes() -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    for route, pattern in routes():
        names = id_names(route)
        owned = [n for n in names if n in OWNED]
        if not owned or any(prefix in route for prefix in CALLERS_OWN):
            continue
        actions = getattr(pattern.callback, "actions", None) or {"get": "retrieve"}
        cases.extend((route, method) for method in sorted(actions))
    return cases


@pytest.mark.parametrize(("route", "method"), owned_routes())
def test_another_principals_id_is_not_found(world, route, method):
    names = id_names(route)
    owner = next(OWNED[n] for n in names if n in OWNED)
    client = world["intruder"][owner]
    theirs = build(route, {n: world["ids"][n] for n in names})
    nothing = build(route, {n: missing_id(n, world["ids"][n]) for n in names})

    def call(path: str):
        response = getattr(client, method)(path, BODIES[method], format="json")
        return response.status_code, response.json()

    answer = call(theirs)
    assert answer == call(nothing)
    action = (getattr(resolve_pattern(route), "actions", None) or {}).get(method, "")
    assert answer[0] == STATUS.get(action, 404), (method, theirs, answer)


def test_a_device_key_id_names_the_callers_own_device(world):
    """Bob's published keys for "phone": alice's PUT and DELETE of "phone" make and remove her
    own device's keys, never bob's."""
    keys = {
        "identity_key": base64.b64encode(bytes(32)).decode(),
        "signed_prekey": {
            "key": base64.b64encode(bytes(32)).decode(),
            "signature": base64.b64encode(bytes(64)).decode(),
        },
    }
    bob = client_for(tokens.issue_user_token(User.objects.get(external_id="bob")))
    assert bob.put("/api/v1/keys/devices/phone", keys, format="json").status_code == 201
    alice = world["intruder"]["user"]
    assert alice.delete("/api/v1/keys/devices/phone").status_code == 404
    other = {**keys, "identity_key": base64.b64encode(b"\x01" * 32).decode()}
    assert alice.put("/api/v1/keys/devices/phone", other, format="json").status_code == 201
    assert alice.delete("/api/v1/keys/devices/phone").status_code == 204
    mine = bob.get("/api/v1/keys/users/bob").json()["devices"]
    assert [(d["device_id"], d["identity_key"]) for d in mine] == [("phone", keys["identity_key"])]
