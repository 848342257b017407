"""A correctly signed token whose time claims are not numbers is refused, on every use.

Before, PyJWT accepted ``"exp": "9999999999"`` (it converts with ``int()``) and the
verified-token cache then compared that string with a float: 200 once, then 500 on every reuse.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from communication.auth import keys

pytestmark = pytest.mark.django_db


def _claims(**overrides):
    now = int(time.time())
    claims = {"sub": "alice", "iat": now, "nbf": now, "exp": now + 600}
    if settings.IDENTITY_ISSUER:
        claims["iss"] = settings.IDENTITY_ISSUER
    if settings.IDENTITY_AUDIENCE:
        claims["aud"] = settings.IDENTITY_AUDIENCE
    claims.update(overrides)
    return claims


def _me(token: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/v1/me")


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": "9999999999"},
        {"exp": "4102444800"},
        {"exp": "soon"},
        {"exp": True},
        {"exp": None},
        {"exp": [9999999999]},
        {"exp": float("inf")},
        {"exp": float("nan")},
        {"nbf": "0"},
        {"nbf": "later"},
        {"nbf": float("-inf")},
        {"iat": "0"},
        {"iat": {"at": 0}},
        {"iat": False},
    ],
    ids=repr,
)
def test_a_non_numeric_time_claim_is_token_invalid_on_every_use(overrides):
    token = keys.dev_sign(_claims(**overrides))
    for _ in range(3):
        response = _me(token)
        assert response.status_code == 401, response.content
        assert response.json()["code"] == "token_invalid"


def test_numeric_time_claims_still_work_and_are_reused():
    now = time.time()
    token = keys.dev_sign(_claims(iat=now, nbf=now - 1.5, exp=now + 600.25))
    assert _me(token).status_code == 200
    assert _me(token).status_code == 200
