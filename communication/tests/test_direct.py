"""``communication.direct``: the send endpoints answered without Django's request machinery
answer exactly as the DRF views do. Each case goes through the real ASGI application twice: once
as served (the direct route) and once through the Django application behind it."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
from a2wsgi import WSGIMiddleware
from django.db import connections

from communication import asgi, direct
from notifications.models import NotificationRequest

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(autouse=True)
def apps():
    """``communication.asgi``'s HTTP application (its registered direct routes in front of
    Django) on threads of its own, whose database connections are closed afterwards."""
    wsgi = WSGIMiddleware(asgi.django_wsgi_app, workers=2)
    served = direct.DirectRoutes(wsgi, wsgi.executor)
    APPS.update(direct=served, view=wsgi)
    yield
    barrier = threading.Barrier(2)

    def close():
        barrier.wait(5)  # one job per thread
        connections.close_all()

    for future in [wsgi.executor.submit(close) for _ in range(2)]:
        future.result()
    wsgi.executor.shutdown()


APPS: dict = {}

SEND = "/api/v1/notifications"
IGNORED_HEADERS = {"x-request-id", "content-length", "date", "server"}
GENERATED = {"request_id", "id", "created_at"}


def call(app, path, *, body=None, raw=None, headers=None):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            content = raw if raw is not None else json.dumps(body).encode()
            return await client.post(
                path,
                content=content,
                headers={"Content-Type": "application/json", **(headers or {})},
            )

    return asyncio.run(go())


def without_generated(value):
    if isinstance(value, dict):
        return {k: without_generated(v) for k, v in value.items() if k not in GENERATED}
    if isinstance(value, list):
        return [without_generated(v) for v in value]
    return value


def same_answer(path, **request):
    """Asserts the direct route and the view answer alike; returns the direct answer."""
    direct = call(APPS["direct"], path, **request)
    view = call(APPS["view"], path, **request)
    assert direct.status_code == view.status_code, (direct.text, view.text)
    assert without_generated(direct.json()) == without_generated(view.json())
    direct_headers = {k: v for k, v in direct.headers.items() if k not in IGNORED_HEADERS}
    view_headers = {k: v for k, v in view.headers.items() if k not in IGNORED_HEADERS}
    assert direct_headers == view_headers
    assert direct.headers["x-request-id"]
    return direct


def body(**changes):
    """A valid send, with ``changes`` (None removes a key)."""
    payload = {
        "recipients": [{"email": "ops@example.com"}],
        "category": "alerts",
        "channels": ["email"],
        "content": {"subject": "Disk {{ n }}", "body": "At {{ n }} %"},
        "data": {"n": 91},
        **changes,
    }
    return {k: v for k, v in payload.items() if v is not None}


@pytest.fixture
def service(make_service_token):
    return {"Authorization": f"Bearer {make_service_token('billing')}"}


def test_the_served_application_routes_the_send_endpoints_directly(service, caplog):
    assert isinstance(asgi.http_app, direct.DirectRoutes)
    caplog.set_level("INFO", logger="communication.access")
    answer = call(APPS["direct"], SEND, body=body(), headers=service)
    scheduled = call(
        APPS["direct"],
        f"{SEND}/schedule",
        body=body(scheduled_at="2099-01-01T00:00:00Z"),
        headers=service,
    )
    assert (answer.status_code, scheduled.status_code) == (202, 202)
    assert [r.module for r in caplog.records if r.name == "communication.access"] == [
        "direct",
        "direct",
    ]


def test_a_send_is_accepted_alike_and_stored_once_per_call(service):
    answer = same_answer(SEND, body=body(), headers=service)
    assert answer.status_code == 202
    assert answer.json()["notifications"][0]["deliveries"][0]["status"] == "queued"
    assert NotificationRequest.objects.filter(caller="billing").count() == 2


@pytest.mark.parametrize(
    "headers, status, code",
    [
        ({}, 401, "token_missing"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 401, "token_invalid"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, "token_invalid"),
    ],
)
def test_refused_tokens_alike(headers, status, code):
    answer = same_answer(SEND, body=body(), headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_token_without_the_scope_or_a_user_token_is_refused_alike(
    make_service_token, make_user_token
):
    no_scope = {"Authorization": f"Bearer {make_service_token('billing', ['campaigns:run'])}"}
    assert same_answer(SEND, body=body(), headers=no_scope).json()["code"] == "scope_missing"
    user = {"Authorization": f"Bearer {make_user_token('alice')}"}
    assert same_answer(SEND, body=body(), headers=user).status_code == 403


@pytest.mark.parametrize(
    "request_kwargs, status, code",
    [
        ({"raw": b'{"recipients": ['}, 400, "validation_error"),
        ({"body": ["not", "an", "object"]}, 400, "validation_error"),
        ({"body": body(recipients=[])}, 400, "validation_error"),
        ({"body": body(recipients=[{"phone": "12"}])}, 400, "validation_error"),
        ({"body": body(template="no-such-template", content=None)}, 400, "unknown_template"),
        ({"body": body(category="no-such-category")}, 400, "unknown_category"),
        (
            {"body": body(recipients=[{"email": f"{i}@example.com"} for i in range(1001)])},
            413,
            "payload_too_large",
        ),
    ],
)
def test_bad_requests_are_answered_alike(service, request_kwargs, status, code):
    answer = same_answer(SEND, headers=service, **request_kwargs)
    assert (answer.status_code, answer.json()["code"]) == (status, code)


def test_idempotent_replays_and_mismatches_alike(service):
    keyed = {**service, "Idempotency-Key": "k-1"}
    first = call(APPS["direct"], SEND, body=body(), headers=keyed)
    assert first.status_code == 202

    replay = same_answer(SEND, body=body(), headers=keyed)
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replay"] == "true"
    mismatch = same_answer(SEND, body=body(data={"n": 1}), headers=keyed)
    assert (mismatch.status_code, mismatch.json()["code"]) == (422, "idempotency_mismatch")


def test_a_schedule_in_the_past_is_refused_alike(service):
    answer = same_answer(
        f"{SEND}/schedule", body=body(scheduled_at="2020-01-01T00:00:00Z"), headers=service
    )
    assert answer.json()["fields"]["scheduled_at"]


def test_what_the_route_does_not_handle_goes_to_django(service, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    from_browser = call(
        APPS["direct"],
        SEND,
        body=body(),
        headers={**service, "Origin": "https://app.example.com"},
    )
    assert from_browser.status_code == 202
    assert from_browser.headers["access-control-allow-origin"] == "https://app.example.com"
    as_form = call(
        APPS["direct"],
        SEND,
        raw=b"recipients=x",
        headers={**service, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert as_form.status_code == 400  # the view's own answer to a form body
