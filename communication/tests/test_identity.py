"""The identity service client: lookups, Redis cache, retries and the circuit breaker."""

from __future__ import annotations

import pytest

from communication import identity, services
from communication.circuit import CircuitOpenError
from communication.models import User

pytestmark = pytest.mark.django_db


def test_unknown_local_user_is_fetched_and_created(identity_provider):
    identity_provider.users["carol"] = {
        "sub": "carol",
        "email": "carol@example.com",
        "phone": "+14155550123",
        "name": "Carol",
        "locale": "en-US",
        "timezone": "America/New_York",
        "organization": "acme",
        "roles": ["member"],
        "attributes": {"plan": "pro"},
    }
    user = services.user_resolve("carol")
    assert user.email == "carol@example.com"
    assert user.phone == "+14155550123"
    assert user.timezone == "America/New_York"
    assert user.attributes == {"plan": "pro"}
    assert User.objects.filter(external_id="carol").count() == 1


def test_profiles_are_cached(identity_provider):
    identity_provider.users["dan"] = {"sub": "dan", "email": "dan@example.com"}
    for _ in range(3):
        services.user_resolve("dan")
    assert identity_provider.user_hits == 1


def test_unknown_user(identity_provider):
    with pytest.raises(identity.UnknownUserError):
        services.user_resolve("nobody")


def test_service_down_uses_the_cached_profile(identity_provider):
    identity_provider.users["erin"] = {"sub": "erin", "email": "erin@example.com"}
    identity.profile_get("erin")
    identity_provider.down = True
    assert identity.profile_get("erin", refresh=True)["email"] == "erin@example.com"


def test_service_down_uses_the_local_row(identity_provider, make_user_token):
    User.objects.create(external_id="frank", username="frank", email="frank@example.com")
    identity_provider.down = True
    assert services.user_resolve("frank").email == "frank@example.com"


def test_service_down_and_user_unknown_is_an_error(identity_provider):
    identity_provider.down = True
    with pytest.raises(identity.IdentityUnavailableError):
        services.user_resolve("ghost")


def test_circuit_opens_after_repeated_failures_and_closes_again(identity_provider, monkeypatch):
    identity_provider.down = True
    for sub in ("a", "b", "c"):
        with pytest.raises(identity.IdentityUnavailableError):
            identity.profile_get(sub)
    # 3 lookups x 2 attempts = 6 failures >= threshold 5: the circuit is open.
    assert identity.breaker.state() == "open"
    hits = identity_provider.user_hits
    with pytest.raises(identity.IdentityUnavailableError):
        identity.profile_get("d")
    assert identity_provider.user_hits == hits, "an open circuit must not call the service"
    with pytest.raises(CircuitOpenError):
        identity.breaker.before_call()

    # After the reset timeout one trial goes through; success closes the circuit.
    monkeypatch.setattr(identity.breaker, "reset_timeout", 0)
    identity_provider.down = False
    identity_provider.users["d"] = {"sub": "d", "email": "d@example.com"}
    assert identity.profile_get("d")["email"] == "d@example.com"
    assert identity.breaker.state() == "closed"


def test_half_open_failure_opens_the_circuit_again(identity_provider, monkeypatch):
    identity_provider.down = True
    for sub in ("a", "b", "c"):
        with pytest.raises(identity.IdentityUnavailableError):
            identity.profile_get(sub)
    monkeypatch.setattr(identity.breaker, "reset_timeout", 0)
    with pytest.raises(identity.IdentityUnavailableError):
        identity.profile_get("e")
    monkeypatch.setattr(identity.breaker, "reset_timeout", 30)
    assert identity.breaker.state() == "open"


def test_api_lookup_survives_identity_outage(identity_provider, api_client):
    token = identity_provider.token("svc", client_id="svc", scope="users:read")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    identity_provider.users["hana"] = {"sub": "hana", "email": "hana@example.com"}
    assert api_client.get("/api/v1/users/hana").status_code == 200
    identity_provider.down = True
    response = api_client.get("/api/v1/users/hana/")
    assert response.status_code == 200
    assert response.json()["email"] == "hana@example.com"
    response = api_client.get("/api/v1/users/stranger")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    identity_provider.down = False
    response = api_client.get("/api/v1/users/stranger")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_user"
