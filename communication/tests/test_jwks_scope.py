"""The cached key set belongs to its source: switching between the identity service's JWKS and the
development key pair (a restart with or without ``IDENTITY_JWKS_URL``, the same Redis) refuses
no valid token and spends no refetch."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from rest_framework.test import APIClient

from communication.auth import keys, tokens
from communication.models import User

pytestmark = pytest.mark.django_db


def me(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/v1/me").status_code


def restart(settings, **changes) -> None:
    """A new process with other settings: its own memory empty, Redis as the last one left it."""
    for name, value in changes.items():
        setattr(settings, name, value)
    keys.jwks_client.reset()
    tokens._verified.clear()


def test_identity_service_then_development_then_identity_service(identity_provider, settings):
    remote = {
        "IDENTITY_JWKS_URL": identity_provider.jwks_url,
        "IDENTITY_ISSUER": identity_provider.ISSUER,
        "IDENTITY_AUDIENCE": identity_provider.AUDIENCE,
    }
    development = {
        "IDENTITY_JWKS_URL": "",
        "IDENTITY_ISSUER": "communication-dev",
        "IDENTITY_AUDIENCE": "communication",
    }
    assert me(identity_provider.token("remote-user")) == 200

    restart(settings, **development)
    dev_user = User.objects.create(username="dev", external_id="dev")
    assert me(tokens.issue_user_token(dev_user)) == 200

    restart(settings, **remote)
    assert me(identity_provider.token("remote-user")) == 200
    assert identity_provider.jwks_hits == 1, "the key set cached for this URL was used again"

    # The refetch a key rotation needs is still there.
    restart(settings)
    identity_provider.rotate(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert me(identity_provider.token("remote-user")) == 200
    assert identity_provider.jwks_hits == 2


def test_two_identity_services_keep_their_own_key_sets(identity_provider, settings):
    assert me(identity_provider.token("remote-user")) == 200
    # The same service under another address (a proxy, a new host name): fetched anew.
    restart(settings, IDENTITY_JWKS_URL=identity_provider.jwks_url + "?v=2")
    assert me(identity_provider.token("remote-user")) == 200
    assert identity_provider.jwks_hits == 2
