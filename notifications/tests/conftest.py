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
