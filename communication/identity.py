"""Client of the identity service: ``GET {IDENTITY_API_URL}/users/{sub}`` and
``GET {IDENTITY_API_URL}/organizations/{id}``.

Authenticated with a client-credentials token from ``IDENTITY_TOKEN_URL``; bounded by timeouts,
retried with exponential backoff, guarded by a circuit breaker, and cached in Redis. When the identity
service is down, the cached profile (or the local ``User`` row) answers and the caller goes on.
"""

from __future__ import annotations

import logging
import random
import time
from urllib.parse import quote

import requests
from django.conf import settings
from django.core.cache import cache

from communication.circuit import CircuitBreaker, CircuitOpenError

logger = logging.getLogger(__name__)

FIELDS = (
    "sub",
    "email",
    "phone",
    "name",
    "locale",
    "timezone",
    "organization",
    "roles",
    "attributes",
)

breaker = CircuitBreaker("identity", failure_threshold=5, reset_timeout=30)


class IdentityUnavailableError(Exception):
    """The identity service could not answer (down, timing out, circuit open)."""


class UnknownUserError(Exception):
    """The identity service says this user does not exist."""


def configured() -> bool:
    return bool(settings.IDENTITY_API_URL)


def _profile_key(sub: str) -> str:
    return f"identity:user:{sub}"


def _service_token() -> str | None:
    """A client-credentials token for the identity API, cached until shortly before it expires."""
    if not settings.IDENTITY_TOKEN_URL:
        return None
    key = "identity:client-token"
    try:
        token = cache.get(key)
    except Exception:
        token = None
    if token:
        return token
    response = requests.post(
        settings.IDENTITY_TOKEN_URL,
        data={
            "grant_type": "client_credentials",
            "client_id": settings.IDENTITY_CLIENT_ID,
            "client_secret": settings.IDENTITY_CLIENT_SECRET,
        },
        timeout=settings.IDENTITY_TIMEOUT,
    )
    response.raise_for_status()
    body = response.json()
    token = body["access_token"]
    ttl = max(int(body.get("expires_in", 300)) - 30, 1)
    try:
        cache.set(key, token, ttl)
    except Exception:
        pass
    return token


ORGANIZATION_FIELDS = ("id", "name", "parent_id")


def _request(path: str) -> requests.Response:
    headers = {"Accept": "application/json"}
    token = _service_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(
        f"{settings.IDENTITY_API_URL}/{path}",
        headers=headers,
        timeout=settings.IDENTITY_TIMEOUT,
    )


def _fetch(sub: str, *, kind: str = "users", fields: tuple[str, ...] = FIELDS) -> dict | None:
    """The ``kind`` object ``sub`` from the identity service (its ``fields``); None when it says
    404. Retries transient errors."""
    attempts = settings.IDENTITY_RETRIES + 1
    last_error: Exception | None = None
    for attempt in range(attempts):
        breaker.before_call()
        try:
            response = _request(f"{kind}/{quote(sub, safe='')}")
            if response.status_code == 404:
                breaker.record_success()
                return None
            if response.status_code == 401:
                # Our client token may have been revoked early: forget it, try once more.
                cache.delete("identity:client-token")
            if response.status_code >= 500 or response.status_code in (401, 429):
                raise requests.HTTPError(f"identity service answered {response.status_code}")
            response.raise_for_status()
            data = response.json()
            if not isinstance(data, dict):
                raise ValueError("identity answer is not an object")
            breaker.record_success()
            return {k: data[k] for k in fields if k in data}
        except (requests.RequestException, ValueError, KeyError) as exc:
            last_error = exc
            breaker.record_failure()
            if attempt + 1 < attempts:
                time.sleep(min(0.1 * 2**attempt, 2.0) * (0.5 + random.random()))
    raise IdentityUnavailableError(str(last_error))


def profile_get(sub: str, *, refresh: bool = False) -> dict | None:
    """The identity service's profile of ``sub``: from Redis when cached, else fetched.

    Returns None for a user the identity service does not know. Raises IdentityUnavailableError
    when it cannot answer and nothing is cached.
    """
    return _cached_get(_profile_key(sub), sub, refresh=refresh)


def organization_get(org_id: str, *, refresh: bool = False) -> dict | None:
    """The identity service's ``{"id", "name", "parent_id"}`` of organization ``org_id``, cached
    in Redis as profiles are. None for an organization it does not know; raises
    IdentityUnavailableError when it cannot answer and nothing is cached."""
    return _cached_get(
        f"identity:org:{org_id}",
        org_id,
        refresh=refresh,
        kind="organizations",
        fields=ORGANIZATION_FIELDS,
    )


def _cached_get(
    key: str,
    sub: str,
    *,
    refresh: bool,
    kind: str = "users",
    fields: tuple[str, ...] = FIELDS,
) -> dict | None:
    if not configured():
        raise IdentityUnavailableError("IDENTITY_API_URL is not configured")
    cached = None
    try:
        cached = cache.get(key)
    except Exception:
        logger.warning("cache unavailable for identity profiles")
    if cached is not None and not refresh:
        return cached or None
    try:
        profile = _fetch(sub, kind=kind, fields=fields)
    except (IdentityUnavailableError, CircuitOpenError) as exc:
        if cached is not None:
            logger.info("identity service unavailable; using cached profile")
            return cached or None
        raise IdentityUnavailableError(str(exc)) from exc
    try:
        # An empty dict remembers "unknown" for a short while, so a typo cannot hammer the service.
        cache.set(key, profile or {}, settings.IDENTITY_CACHE_SECONDS if profile else 60)
    except Exception:
        pass
    return profile
