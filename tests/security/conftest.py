"""Personas for the security suite: alice and bob (users), a service with every scope it needs,
and a conversation alice and bob share."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from communication.auth import tokens
from communication.models import User

SERVICE_SCOPES = (
    "notifications:send",
    "templates:manage",
    "users:read",
)


def _user(name: str, **extra) -> User:
    return User.objects.create(
        username=name, external_id=name, email=f"{name}@example.com", name=name.title(), **extra
    )


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def alice(db):
    return _user("alice")


@pytest.fixture
def bob(db):
    return _user("bob")


@pytest.fixture
def carol(db):
    return _user("carol")


@pytest.fixture
def as_user():
    def make(user: User) -> APIClient:
        return _client(tokens.issue_user_token(user))

    return make


@pytest.fixture
def service(db):
    return _client(tokens.issue_service_token("billing", list(SERVICE_SCOPES)))


@pytest.fixture
def conversation(as_user, alice, bob):
    """A direct conversation between alice and bob, with one message from alice."""
    client = as_user(alice)
    created = client.post(
        "/api/v1/conversations", {"type": "direct", "participants": ["bob"]}, format="json"
    )
    assert created.status_code in (200, 201), created.content
    conversation_id = created.json()["id"]
    sent = client.post(
        f"/api/v1/conversations/{conversation_id}/messages", {"content": "hi"}, format="json"
    )
    assert sent.status_code in (200, 201), sent.content
    return {"id": conversation_id, "message_id": sent.json()["id"]}
