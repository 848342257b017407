"""One request pipeline: every HTTP request, the send endpoints included, goes through Django's
handler and its one MIDDLEWARE list, as the ASGI application is built."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test import override_settings

from communication.asgi import make_application

seen: list[tuple[str, bool]] = []


class MarkerMiddleware:
    """Stands for any middleware added later (a rate limit, CSP, an audit entry)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        seen.append((request.path, hasattr(request, "session")))
        response = self.get_response(request)
        response["X-Marker"] = "ran"
        return response


async def _call(app, method: str, path: str, body: bytes, headers: list) -> tuple[int, dict, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": body})
    start = await communicator.receive_output(30)
    content = b""
    while True:
        message = await communicator.receive_output(30)
        content += message.get("body", b"")
        if not message.get("more_body"):
            break
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, content


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_middleware_added_to_the_settings_runs_on_the_send(
    settings, make_service_token, monkeypatch
):
    # The request threads close their connections at the end of each request (as the pool
    # hands them back in the web process), so the test database can be dropped afterwards.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    seen.clear()
    with override_settings(MIDDLEWARE=[*settings.MIDDLEWARE, f"{__name__}.MarkerMiddleware"]):
        app = make_application(WSGIHandler())
    body = json.dumps(
        {
            "recipients": [{"email": "a@example.com"}],
            "channels": ["email"],
            "content": {"subject": "Hi", "body": "Hello"},
        }
    ).encode()
    headers = [
        (b"authorization", f"Bearer {make_service_token()}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    status, answer_headers, content = async_to_sync(_call)(
        app, "POST", "/api/v1/notifications", body, headers
    )
    assert status == 202, content
    assert answer_headers["x-marker"] == "ran"
    assert answer_headers["x-request-id"]
    # The bearer-token API gets no session; the admin keeps it.
    status, answer_headers, _ = async_to_sync(_call)(app, "GET", "/admin/login/", b"", [])
    assert status == 200
    assert answer_headers["x-marker"] == "ran"
    assert "csrftoken" in answer_headers.get("set-cookie", "")
    assert seen == [("/api/v1/notifications", False), ("/admin/login/", True)]
