"""The messaging API is for signed-in users: a request without a token is refused, with the
challenge that tells the client how to authenticate."""

from __future__ import annotations

import pytest

from messaging.tests.conftest import create_conversation

pytestmark = pytest.mark.django_db


def test_the_conversation_list_without_a_token_is_401_with_a_bearer_challenge(as_user, alice, bob):
    create_conversation(as_user(alice))
    anonymous = as_user(alice)
    anonymous.credentials()  # the same client, its token removed
    response = anonymous.get("/api/v1/conversations")
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "results" not in response.json()
