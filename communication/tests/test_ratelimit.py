"""HTTP rate limits (communication.ratelimit, communication.api.throttling): the limiter's own
tests, so they turn ``RATE_LIMITS`` on (the rest of the suite runs with it off)."""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from rest_framework.test import APIClient

from communication import ratelimit
from communication.ratelimit import Limit, parse_limits

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_limiter(monkeypatch):
    """A limiter of this test's own: the per-process fallback state does not outlive it."""
    monkeypatch.setattr(ratelimit, "limiter", ratelimit.Limiter())


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def assert_rate_limited(response, group: str, most: int) -> int:
    assert response.status_code == 429, response.content
    body = response.json()
    assert set(body) == {"code", "detail", "retry_after"}, body
    assert body["code"] == "rate_limited"
    assert group in body["detail"]
    assert isinstance(body["retry_after"], int) and 1 <= body["retry_after"] <= most
    assert response["Retry-After"] == str(body["retry_after"])
    return body["retry_after"]


# --------------------------------------------------------------------------------- the setting


def test_rate_limits_setting_keeps_defaults_for_groups_left_out():
    limits = parse_limits("send=5/s, read=100/h")
    assert limits == {
        "send": Limit(5, 1),
        "write": Limit(600, 60),
        "read": Limit(100, 3600),
        "upload": Limit(60, 60),
    }
    assert parse_limits("") == parse_limits("send=600/m,write=600/m,read=1200/m,upload=60/m")
    assert parse_limits("off") is None
    assert parse_limits("upload=off")["upload"] is None


@pytest.mark.parametrize("bad", ["send", "sends=1/m", "send=0/m", "send=1/week", "send=x/m"])
def test_a_bad_rate_limits_value_is_refused(bad):
    with pytest.raises(ValueError, match="RATE_LIMITS"):
        parse_limits(bad)


# ---------------------------------------------------------------------------------- the answer


def test_a_user_over_the_read_limit_gets_429_and_others_are_not_affected(settings, make_user_token):
    settings.RATE_LIMITS = "read=3/m"
    alice = bearer(make_user_token("alice"))
    for _ in range(3):
        assert alice.get("/api/v1/me").status_code == 200
    retry = assert_rate_limited(alice.get("/api/v1/me"), "read", most=20)
    assert retry >= 19  # the next slot is a third of a minute away
    # Another user has an allowance of their own; alice's writes are another group.
    assert bearer(make_user_token("bob")).get("/api/v1/me").status_code == 200
    assert alice.post("/api/v1/conversations", {}, format="json").status_code == 400


def test_sends_count_against_the_send_group_per_service(settings, make_service_token):
    settings.RATE_LIMITS = "send=2/m,write=1000/m"
    billing = bearer(make_service_token("billing", ["notifications:send"]))
    # Invalid sends count too: the limit holds before the body is read.
    assert billing.post("/api/v1/notifications", {}, format="json").status_code == 400
    assert billing.post("/api/v1/notifications/schedule", {}, format="json").status_code == 400
    assert_rate_limited(billing.post("/api/v1/notifications", {}, format="json"), "send", 30)
    other = bearer(make_service_token("shop", ["notifications:send"]))
    assert other.post("/api/v1/notifications", {}, format="json").status_code == 400


def test_uploads_have_a_limit_of_their_own(settings, make_user_token):
    settings.RATE_LIMITS = "upload=1/h"
    alice = bearer(make_user_token("alice"))
    assert alice.post("/api/v1/attachments", {}, format="multipart").status_code == 400
    assert_rate_limited(
        alice.post("/api/v1/attachments", {}, format="multipart"), "upload", most=3600
    )
    assert alice.post("/api/v1/conversations", {}, format="json").status_code == 400


def test_off_disables_every_limit(settings, make_user_token):
    settings.RATE_LIMITS = "off"
    alice = bearer(make_user_token("alice"))
    assert all(alice.get("/api/v1/me").status_code == 200 for _ in range(5))


def test_parallel_requests_take_at_most_the_limit(settings, make_service_token):
    """Counted atomically in Redis: 100 requests at once against a limit of 10 admit 10."""
    settings.RATE_LIMITS = "send=10/m"
    token = make_service_token(f"svc-{uuid.uuid4().hex[:6]}", ["notifications:send"])

    def post(_):
        return bearer(token).post("/api/v1/notifications", {}, format="json").status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(post, range(100)))
    assert statuses.count(400) == 10, statuses  # admitted (and refused by validation)
    assert statuses.count(429) == 90


# ----------------------------------------------------------------------- anonymous: by address


def download(client: APIClient, **headers):
    return client.get(f"/api/v1/attachments/{uuid.uuid4()}/download", **headers)


def test_anonymous_requests_are_limited_by_the_address_behind_the_trusted_proxies(settings):
    settings.RATE_LIMITS = "read=2/m"
    settings.TRUSTED_PROXY_COUNT = 1
    client = APIClient()
    assert download(client, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 403
    # What the client put before the proxy's entry is ignored.
    assert download(client, HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7").status_code == 403
    assert_rate_limited(
        download(client, HTTP_X_FORWARDED_FOR="198.51.100.2, 203.0.113.7"), "read", 30
    )
    assert download(client, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 403


def test_without_trusted_proxies_forwarded_for_is_ignored(settings):
    settings.RATE_LIMITS = "read=1/m"
    settings.TRUSTED_PROXY_COUNT = 0
    client = APIClient()
    assert download(client, HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    assert download(client, HTTP_X_FORWARDED_FOR="203.0.113.10").status_code == 429


# ------------------------------------------------------------------------- Redis unreachable


def test_without_redis_the_process_limits_by_itself_and_says_so(
    settings, make_user_token, caplog, monkeypatch
):
    settings.RATE_LIMITS = "read=2/m"
    # Redis is tried again on the next request (in production, after a few seconds).
    monkeypatch.setattr(ratelimit, "_REDIS_RETRY_SECONDS", 0.0)
    alice = bearer(make_user_token("alice"))
    redis_url = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="communication.ratelimit"):
        assert alice.get("/api/v1/me").status_code == 200
        assert alice.get("/api/v1/me").status_code == 200
        assert_rate_limited(alice.get("/api/v1/me"), "read", most=30)
    warnings = [r.getMessage() for r in caplog.records if r.name == "communication.ratelimit"]
    assert warnings == ["rate limits: Redis unreachable, limiting per process"]

    # Redis back: the shared count is used again (alice's allowance there is untouched).
    settings.REDIS_URL = redis_url
    with caplog.at_level(logging.WARNING, logger="communication.ratelimit"):
        assert alice.get("/api/v1/me").status_code == 200
    assert "Redis reachable again" in caplog.records[-1].getMessage()
