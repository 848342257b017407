from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from communication.auth import tokens
from communication.models import User


@pytest.fixture
def alice(db):
    return User.objects.create(
        username="alice",
        external_id="alice",
        email="alice@example.com",
        phone="+33612345678",
        timezone="Europe/Paris",
        locale="fr",
    )


@pytest.fixture
def bob(db):
    return User.objects.create(
        username="bob",
        external_id="bob",
        email="bob@example.com",
        timezone="America/New_York",
        locale="en",
    )


@pytest.fixture
def sender(make_service_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('billing')}")
    return client


@pytest.fixture
def as_user():
    def make(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_user_token(user)}")
        return client

    return make


def member(name: str, org: str, roles=("member",)) -> User:
    """A user of organization ``org`` (organization-wide sends and broadcasts)."""
    return User.objects.create(
        username=name,
        external_id=name,
        email=f"{name}@example.com",
        organization=org,
        roles=list(roles),
    )


def reached(response) -> dict[str, dict]:
    """Each recipient's deliveries by channel, by user id (each user at most once)."""
    assert response.status_code == 202, response.content
    out: dict[str, dict] = {}
    for n in response.json()["notifications"]:
        user_id = n["recipient"]["user_id"]
        assert user_id not in out, f"{user_id} reached twice"
        out[user_id] = {d["channel"]: d for d in n["deliveries"]}
    return out
