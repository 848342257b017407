"""Verifying the JWTs that users and services present, and issuing development ones."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import jwt
from django.conf import settings

from communication.auth import keys
from communication.exceptions import TokenError


@dataclass(frozen=True)
class ServicePrincipal:
    """The caller of a service-to-service request (an OAuth 2 client-credentials token)."""

    client_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    claims: dict = field(default_factory=dict, compare=False, hash=False)

    is_authenticated = True
    is_anonymous = False
    is_service = True
    is_staff = False
    is_active = True

    @property
    def pk(self):  # DRF throttles and logs key on pk
        return f"service:{self.client_id}"

    def __str__(self) -> str:
        return f"service:{self.client_id}"


# Tokens verified lately: a service presents the same token on every call until it expires,
# and checking its signature again (RSA, key parsing) cost a tenth of a send's CPU. A hit is
# answered only while the same key is still published under its kid and the settings that
# verification read are unchanged; expiry is checked on every use, as PyJWT checks it.
_VERIFIED_MAX = 4096
_verified: OrderedDict[str, tuple] = OrderedDict()
_verified_lock = threading.Lock()


def verify(token: str) -> dict:
    """The claims of a valid token, or :class:`TokenError` saying why it is not."""
    config = (
        settings.IDENTITY_AUDIENCE,
        settings.IDENTITY_ISSUER,
        settings.JWT_LEEWAY_SECONDS,
        tuple(keys.allowed_algorithms()),
    )
    with _verified_lock:
        hit = _verified.get(token)
    if hit is not None:
        seen_config, kid, jwk, claims = hit
        if seen_config == config and keys.jwks_client.get(kid) == jwk:
            if claims["exp"] <= time.time() - settings.JWT_LEEWAY_SECONDS:
                raise TokenError("Token has expired", code="token_expired")
            return dict(claims)
    claims, kid, jwk = _verify(token)
    with _verified_lock:
        _verified[token] = (config, kid, jwk, dict(claims))
        while len(_verified) > _VERIFIED_MAX:
            _verified.popitem(last=False)
    return claims


def _verify(token: str) -> tuple[dict, str, dict]:
    """``(claims, kid, the key)`` of a valid token (its signature checked), or TokenError."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"Malformed token: {exc}") from exc
    alg = header.get("alg")
    if alg not in keys.allowed_algorithms():
        raise TokenError(f"Algorithm {alg!r} is not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("Token has no key id (kid)")
    try:
        jwk = keys.jwks_client.get(kid)
    except keys.JWKSUnavailableError as exc:
        raise TokenError(f"Signing keys unavailable: {exc}") from exc
    if jwk is None:
        raise TokenError("Unknown signing key (kid)")
    if jwk.get("kty") != keys.kty_for(alg) or jwk.get("alg") not in (None, alg):
        raise TokenError("Token algorithm does not match its key")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except jwt.PyJWKError as exc:
        raise TokenError("Signing key is unusable") from exc

    audience = settings.IDENTITY_AUDIENCE or None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=settings.IDENTITY_ISSUER or None,
            leeway=settings.JWT_LEEWAY_SECONDS,
            options={
                "require": ["exp", "sub"] + (["iss"] if settings.IDENTITY_ISSUER else []),
                "verify_aud": audience is not None,
            },
        )
    except jwt.ExpiredSignatureError as exc:
        _check_time_claims(_signed_claims(token))  # PyJWT reads `true` as 1: expired
        raise TokenError("Token has expired", code="token_expired") from exc
    except jwt.ImmatureSignatureError as exc:
        _check_time_claims(_signed_claims(token))
        raise TokenError("Token is not yet valid (nbf/iat in the future)") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("Token audience is not accepted") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenError("Token issuer is not accepted") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("Token signature is invalid") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"Token lacks the required claim {exc.claim!r}") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"Token is invalid: {exc}") from exc
    _check_time_claims(claims)
    return claims, kid, jwk


# RFC 7519 §2: NumericDate is a JSON number. PyJWT converts with int(), so it accepts "123" and
# true; the cache in verify() compares exp with a float on every reuse, so it must be a number.
_TIME_CLAIMS = ("exp", "nbf", "iat")


def _signed_claims(token: str) -> dict:
    """The claims of a token whose signature PyJWT has already checked (it checks the claims'
    values after the signature)."""
    return jwt.decode(token, options={"verify_signature": False})


def _check_time_claims(claims: dict) -> None:
    """TokenError (``token_invalid``) unless each time claim present is a finite number."""
    for claim in _TIME_CLAIMS:
        if claim not in claims:
            continue
        value = claims[claim]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TokenError(f"Token claim {claim!r} is not a number")
        if not math.isfinite(value):
            raise TokenError(f"Token claim {claim!r} is not a finite number")


def is_service_token(claims: dict) -> bool:
    """RFC 9068: a client-credentials token's ``sub`` is its ``client_id``."""
    client_id = claims.get("client_id")
    return bool(client_id) and claims.get("sub") == client_id


def scopes_of(claims: dict) -> frozenset[str]:
    scope = claims.get("scope", "")
    if isinstance(scope, list):
        return frozenset(str(s) for s in scope)
    return frozenset(str(scope).split())


def principal_for(claims: dict) -> ServicePrincipal:
    return ServicePrincipal(client_id=claims["client_id"], scopes=scopes_of(claims), claims=claims)


def _base_claims(sub: str, ttl: int) -> dict:
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "nbf": now, "exp": now + ttl, "jti": uuid.uuid4().hex}
    if settings.IDENTITY_ISSUER:
        claims["iss"] = settings.IDENTITY_ISSUER
    if settings.IDENTITY_AUDIENCE:
        claims["aud"] = settings.IDENTITY_AUDIENCE
    return claims


def issue_user_token(user, *, ttl: int = 3600) -> str:
    """A development user token carrying the user's profile as claims."""
    claims = _base_claims(user.external_id, ttl)
    for claim, value in (
        ("email", user.email),
        ("phone_number", user.phone),
        ("name", user.name),
        ("locale", user.locale),
        ("zoneinfo", user.timezone),
        ("organization", user.organization),
    ):
        if value:
            claims[claim] = value
    claims["roles"] = list(user.roles)
    return keys.dev_sign(claims)


def issue_service_token(client_id: str, scopes: list[str], *, ttl: int = 3600) -> str:
    claims = _base_claims(client_id, ttl)
    claims.update({"client_id": client_id, "scope": " ".join(scopes)})
    return keys.dev_sign(claims)
