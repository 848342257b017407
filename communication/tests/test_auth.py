"""User and service JWTs against the identity service's JWKS (a local HTTP server plays it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.cache import cache
from rest_framework.test import APIClient

from communication.models import User

pytestmark = pytest.mark.django_db


def get_me(token: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/v1/me")


def assert_401(response, code: str):
    assert response.status_code == 401, response.content
    assert response.json()["code"] == code
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_valid_token_creates_the_user_from_claims(identity_provider):
    token = identity_provider.token(
        "user-1",
        email="u1@example.com",
        phone_number="+33612345678",
        name="Ursula",
        locale="fr-FR",
        zoneinfo="Europe/Paris",
        roles=["support_agent"],
    )
    response = get_me(token)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "user_id": "user-1",
        "name": "Ursula",
        "email": "u1@example.com",
        "phone": "+33612345678",
        "locale": "fr-FR",
        "timezone": "Europe/Paris",
        "roles": ["support_agent"],
        "organization": "",
    }
    user = User.objects.get(external_id="user-1")
    assert user.name == "Ursula"


def test_absent_claim_never_blanks_a_stored_field(identity_provider):
    get_me(identity_provider.token("user-2", email="first@example.com", name="First"))
    response = get_me(identity_provider.token("user-2", name="Renamed"))
    assert response.json()["email"] == "first@example.com"
    assert response.json()["name"] == "Renamed"


def test_unusable_claim_is_ignored_not_fatal(identity_provider):
    response = get_me(
        identity_provider.token("user-3", phone_number="not a phone", zoneinfo="Mars/Olympus")
    )
    assert response.status_code == 200
    assert response.json()["phone"] == ""
    assert response.json()["timezone"] == ""


def test_missing_token(identity_provider):
    assert_401(APIClient().get("/api/v1/me"), "token_missing")


def test_wrong_scheme_is_invalid(identity_provider):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
    assert_401(client.get("/api/v1/me"), "token_invalid")


def test_expired(identity_provider):
    assert_401(get_me(identity_provider.token(exp_in=-120)), "token_expired")


def test_expiry_within_leeway_is_accepted(identity_provider):
    assert get_me(identity_provider.token(exp_in=-5)).status_code == 200


def test_not_yet_valid(identity_provider):
    token = identity_provider.token(nbf=int(time.time()) + 600)
    response = get_me(token)
    assert_401(response, "token_invalid")
    assert "not yet valid" in response.json()["detail"]


def test_token_without_exp_is_refused(identity_provider):
    response = get_me(identity_provider.token(exp=None))
    assert_401(response, "token_invalid")
    assert "exp" in response.json()["detail"]


def test_wrong_issuer(identity_provider):
    response = get_me(identity_provider.token(iss="https://evil.test"))
    assert_401(response, "token_invalid")
    assert "issuer" in response.json()["detail"]


def test_wrong_audience(identity_provider):
    response = get_me(identity_provider.token(aud="another-service"))
    assert_401(response, "token_invalid")
    assert "audience" in response.json()["detail"]


def test_bad_signature(identity_provider):
    header, payload, signature = identity_provider.token().split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["sub"] = "admin"
    payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    response = get_me(f"{header}.{payload}.{signature}")
    assert_401(response, "token_invalid")
    assert "signature" in response.json()["detail"]


def test_signed_by_a_key_not_in_the_jwks(identity_provider):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = identity_provider.token(key=stranger)
    response = get_me(token)
    assert_401(response, "token_invalid")
    assert "Unknown signing key" in response.json()["detail"]


def test_alg_none(identity_provider):
    kid = identity_provider.jwk(identity_provider.keys[-1])["kid"]
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": kid}).encode())
    payload = base64.urlsafe_b64encode(
        json.dumps(
            {
                "sub": "admin",
                "iss": identity_provider.ISSUER,
                "aud": identity_provider.AUDIENCE,
                "exp": int(time.time()) + 300,
            }
        ).encode()
    )
    token = f"{header.rstrip(b'=').decode()}.{payload.rstrip(b'=').decode()}."
    response = get_me(token)
    assert_401(response, "token_invalid")
    assert "'none'" in response.json()["detail"]


def test_hs256_signed_with_the_public_key(identity_provider):
    key = identity_provider.keys[-1]
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = identity_provider.jwk(key)["kid"]
    now = int(time.time())
    claims = {
        "sub": "admin",
        "iss": identity_provider.ISSUER,
        "aud": identity_provider.AUDIENCE,
        "exp": now + 300,
    }
    # PyJWT refuses to sign HS256 with a PEM key; build the token by hand as an attacker would.

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}."
        f"{b64(json.dumps(claims).encode())}"
    )
    sig = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    response = get_me(f"{signing_input}.{b64(sig)}")
    assert_401(response, "token_invalid")
    assert "HS256" in response.json()["detail"]
    assert not User.objects.filter(external_id="admin").exists()


def test_es256_is_accepted_when_the_jwks_has_an_ec_key(identity_provider, httpserver):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    numbers = ec_key.public_key().public_numbers()

    def b64int(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

    ec_jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64int(numbers.x),
        "y": b64int(numbers.y),
        "kid": "ec-1",
        "alg": "ES256",
        "use": "sig",
    }
    original = identity_provider._jwks

    def with_ec(request):
        response = original(request)
        data = json.loads(response.get_data())
        data["keys"].append(ec_jwk)
        response.set_data(json.dumps(data))
        return response

    identity_provider._jwks = with_ec
    httpserver.clear()
    httpserver.expect_request("/.well-known/jwks.json").respond_with_handler(with_ec)
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": "ec-user",
            "iss": identity_provider.ISSUER,
            "aud": identity_provider.AUDIENCE,
            "exp": now + 60,
        },
        ec_key,
        algorithm="ES256",
        headers={"kid": "ec-1"},
    )
    assert get_me(token).status_code == 200


def test_jku_header_is_ignored(identity_provider, httpserver):
    """A token pointing at its own key set (jku) is verified against ours and fails."""
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_jwk = identity_provider.jwk(attacker)
    httpserver.expect_request("/attacker-jwks").respond_with_json({"keys": [attacker_jwk]})
    token = identity_provider.token(
        key=attacker,
        headers={
            "jku": httpserver.url_for("/attacker-jwks"),
            "x5u": httpserver.url_for("/attacker-jwks"),
        },
    )
    assert_401(get_me(token), "token_invalid")
    assert not any(req.path == "/attacker-jwks" for req, _ in httpserver.log)


def test_rotated_key_is_picked_up_without_restart(identity_provider):
    assert get_me(identity_provider.token("rot")).status_code == 200
    hits_before = identity_provider.jwks_hits
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    identity_provider.rotate(new_key)
    identity_provider.drop_old_keys()
    response = get_me(identity_provider.token("rot", key=new_key))
    assert response.status_code == 200, response.content
    assert identity_provider.jwks_hits == hits_before + 1


def test_random_kids_refetch_at_most_once_a_minute(identity_provider):
    assert get_me(identity_provider.token()).status_code == 200
    hits_before = identity_provider.jwks_hits
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for i in range(20):
        token = identity_provider.token(key=stranger, headers={"kid": f"random-{i}"})
        assert_401(get_me(token), "token_invalid")
    assert identity_provider.jwks_hits == hits_before + 1


def test_jwks_is_cached_between_requests(identity_provider):
    for _ in range(5):
        assert get_me(identity_provider.token()).status_code == 200
    assert identity_provider.jwks_hits == 1


def test_service_token_with_scope(identity_provider):
    token = identity_provider.token("billing", client_id="billing", scope="users:read other")
    identity_provider.users["bob"] = {"sub": "bob", "email": "bob@example.com"}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.get("/api/v1/users/bob")
    assert response.status_code == 200, response.content
    assert response.json()["email"] == "bob@example.com"


def test_service_token_without_the_scope_is_403(identity_provider):
    token = identity_provider.token("billing", client_id="billing", scope="notifications:send")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.get("/api/v1/users/bob")
    assert response.status_code == 403
    assert response.json()["code"] == "scope_missing"
    assert "users:read" in response.json()["detail"]


def test_user_token_cannot_use_a_service_endpoint(identity_provider):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {identity_provider.token('alice')}")
    response = client.get("/api/v1/users/bob")
    assert response.status_code == 403
    assert response.json()["code"] == "scope_missing"


def test_service_token_is_not_a_user(identity_provider):
    token = identity_provider.token("billing", client_id="billing", scope="users:read")
    response = get_me(token)
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert not User.objects.filter(external_id="billing").exists()


def test_development_tokens(make_user_token, make_service_token):
    """Without IDENTITY_JWKS_URL the development key pair signs and verifies."""
    response = get_me(make_user_token("dev-user", email="dev@example.com"))
    assert response.status_code == 200
    assert response.json()["email"] == "dev@example.com"
    assert_401(get_me(make_user_token("dev-user", ttl=-3600)), "token_expired")


def test_development_jwks_is_served(client, settings):
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert key["kty"] == "RSA" and key["kid"]
    assert "d" not in key  # the public half only
    settings.APP_ENV = "production"
    settings.DEVELOPMENT = False
    assert client.get("/.well-known/jwks.json").status_code == 404


def test_a_token_seen_before_is_not_verified_again_but_still_expires(
    identity_provider, settings, monkeypatch
):
    settings.JWT_LEEWAY_SECONDS = 0
    token = identity_provider.token(exp_in=60)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    decoded = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))

    assert get_me(token).status_code == 200
    assert get_me(token).status_code == 200
    assert len(decoded) == 1, "the second call reused the first verification"
    # The clock moves rather than the test waiting: a second before exp the cached token is
    # still good, at exp it has expired (as PyJWT would say), and neither answer re-verified it.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: exp - 1.0)
    assert get_me(token).status_code == 200
    monkeypatch.setattr(time, "time", lambda: float(exp))
    assert_401(get_me(token), "token_expired")
    assert len(decoded) == 1, "the cached entry itself was refused"
    monkeypatch.setattr(time, "time", real_time)


def test_a_token_seen_before_is_refused_once_its_key_is_withdrawn(identity_provider, settings):
    token = identity_provider.token()
    assert get_me(token).status_code == 200

    settings.JWKS_CACHE_SECONDS = 0  # the key set is read again at once
    cache.clear()
    identity_provider.rotate(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    identity_provider.drop_old_keys()
    response = get_me(token)
    assert_401(response, "token_invalid")
    assert "Unknown signing key" in response.json()["detail"]


def test_a_token_seen_before_is_checked_again_when_the_audience_changes(
    identity_provider, settings
):
    token = identity_provider.token()
    assert get_me(token).status_code == 200

    settings.IDENTITY_AUDIENCE = "another-service"
    assert_401(get_me(token), "token_invalid")
