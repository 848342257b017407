"""Client of the identity service: ``GET {IDENTITY_API_URL}/users/{sub}``,
``GET {IDENTITY_API_URL}/organizations/{id}`` and its ``/members`` listing.

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


def _request(url: str, params: dict[str, str] | None = None) -> requests.Response:
    headers = {"Accept": "application/json"}
    token = _service_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(url, params=params, headers=headers, timeout=settings.IDENTITY_TIMEOUT)


def _get_json(url: str, params: dict[str, str] | None = None) -> dict | None:
    """The JSON object at ``url`` on the identity service; None when it says 404. Retries
    transient errors, through the circuit breaker."""
    attempts = settings.IDENTITY_RETRIES + 1
    last_error: Exception | None = None
    for attempt in range(attempts):
        breaker.before_call()
        try:
            response = _request(url, params)
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
            return data
        except (requests.RequestException, ValueError, KeyError) as exc:
            last_error = exc
            breaker.record_failure()
            if attempt + 1 < attempts:
                time.sleep(min(0.1 * 2**attempt, 2.0) * (0.5 + random.random()))
    raise IdentityUnavailableError(str(last_error))


def _fetch(sub: str, *, kind: str = "users", fields: tuple[str, ...] = FIELDS) -> dict | None:
    """The ``kind`` object ``sub`` from the identity service (its ``fields``); None when it says
    404."""
    data = _get_json(f"{settings.IDENTITY_API_URL}/{kind}/{quote(sub, safe='')}")
    return None if data is None else {k: data[k] for k in fields if k in data}


# Pages of one members listing followed at most: a ``next`` that never ends stops here.
MEMBER_PAGES_MAX = 1000


def organization_members(
    org_id: str, *, include_descendants: bool, limit: int
) -> list[dict] | None:
    """The members the identity service lists for organization ``org_id`` (and, with
    ``include_descendants``, the organizations under it): ``GET {IDENTITY_API_URL}/
    organizations/{id}/members?include_descendants=true|false``, answering pages of
    ``{"results": [{"id", "email", "phone", "name", "locale", "timezone", "organization",
    "roles"}], "next": url or null}``.

    Each member is a profile as ``profile_get`` gives it (``sub`` from ``id``). Stops once more
    than ``limit`` are listed (the caller refuses that many). None when the service says 404
    (the organization is not its own, or it lists no members). Not cached: a send addresses
    the members of the moment. Raises IdentityUnavailableError when it cannot answer, and for
    a ``next`` off the identity service (our token never goes elsewhere).
    """
    if not configured():
        raise IdentityUnavailableError("IDENTITY_API_URL is not configured")
    base = settings.IDENTITY_API_URL
    url: str | None = f"{base}/organizations/{quote(org_id, safe='')}/members"
    params: dict[str, str] | None = {"include_descendants": str(include_descendants).lower()}
    members: list[dict] = []
    for _ in range(MEMBER_PAGES_MAX):
        if url is None or len(members) > limit:
            break
        if not url.startswith(f"{base}/"):
            raise IdentityUnavailableError("identity members page outside the identity API")
        try:
            page = _get_json(url, params)
        except CircuitOpenError as exc:
            raise IdentityUnavailableError(str(exc)) from exc
        if page is None:
            return None if not members else members
        results = page.get("results")
        if not isinstance(results, list):
            raise IdentityUnavailableError("identity members page without results")
        for item in results:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                profile = {k: item[k] for k in FIELDS if k in item and k != "sub"}
                members.append({"sub": item["id"], **profile})
        nxt = page.get("next")
        url = nxt if isinstance(nxt, str) and nxt else None
        params = None  # ``next`` carries its own query
    return members


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
