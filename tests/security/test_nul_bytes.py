"""NUL characters, which PostgreSQL text and JSONB refuse, are a 400 naming the field wherever
they come in over HTTP: query parameters, path segments, JSON bodies (strings, nested values,
keys), form and multipart fields. Before, most of these reached the database: a 500."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

pytestmark = pytest.mark.django_db

SEND = {"recipients": [{"user_id": "alice"}], "content": {"title": "t", "body": "b"}}
LATER = "2999-01-01T00:00:00Z"

# (who, method, path, body, the field the answer names). ``{c}`` is the conversation's id.
CASES = [
    # query parameters
    ("alice", "get", "/api/v1/notifications/history?category=a%00", None, "category"),
    ("alice", "get", "/api/v1/notifications/history?unread=1&x=%00", None, "x"),
    ("service", "get", "/api/v1/notifications/requests?category=a%00", None, "category"),
    ("service", "get", "/api/v1/notifications/requests?since=%00", None, "since"),
    ("service", "get", "/api/v1/templates?search=a%00", None, "search"),
    ("service", "get", "/api/v1/templates?category=a%00", None, "category"),
    ("service", "get", "/api/v1/templates?language=e%00n", None, "language"),
    ("service", "get", "/api/v1/templates/versions?template=a%00", None, "template"),
    ("service", "get", "/api/v1/templates/versions?status=a%00", None, "status"),
    ("alice", "get", "/api/v1/conversations?q=%00", None, "q"),
    ("alice", "get", "/api/v1/me?%00=1", None, "\\u0000"),
    # path segments
    ("service", "get", "/api/v1/users/al%00ice", None, "user_id"),
    ("alice", "delete", "/api/v1/conversations/{c}/participants/b%00ob", None, "user_id"),
    # JSON strings and values
    (
        "service",
        "post",
        "/api/v1/notifications",
        {**SEND, "recipients": [{"user_id": "al\x00ice"}]},
        "recipients[0].user_id",
    ),
    ("service", "post", "/api/v1/notifications", {**SEND, "data": {"n": "\x00"}}, "data.n"),
    (
        "service",
        "post",
        "/api/v1/notifications",
        {**SEND, "content": {"title": "t", "body": "b", "data": {"k": ["ok", {"deep": "\x00"}]}}},
        "content.data.k[1].deep",
    ),
    ("service", "post", "/api/v1/notifications", {**SEND, "data": {"a\x00b": 1}}, "data.a\\u0000b"),
    (
        "service",
        "post",
        "/api/v1/notifications/schedule",
        {**SEND, "scheduled_at": LATER, "data": {"n": "x\x00"}},
        "data.n",
    ),
    (
        "alice",
        "post",
        "/api/v1/conversations",
        {"type": "group", "participants": ["bob"], "metadata": {"k": "\x00"}},
        "metadata.k",
    ),
    ("alice", "patch", "/api/v1/conversations/{c}", {"metadata": {"k": "\x00"}}, "metadata.k"),
    (
        "alice",
        "post",
        "/api/v1/conversations/{c}/messages",
        {"content": "hi", "metadata": {"k": "\x00"}},
        "metadata.k",
    ),
    ("alice", "post", "/api/v1/conversations/{c}/messages", {"content": "h\x00i"}, "content"),
    (
        "service",
        "post",
        "/api/v1/templates/preview",
        {"channel": "in_app", "title": "t", "body": "b", "data": {"n": "\x00"}},
        "data.n",
    ),
    (
        "service",
        "post",
        "/api/v1/templates/render",
        {"template": "welcome", "data": {"n": "\x00"}},
        "data.n",
    ),
    (
        "service",
        "post",
        "/api/v1/templates",
        {
            "key": "nul",
            "name": "n",
            "category": "transactional",
            "channel": "in_app",
            "variables": [{"name": "\x00"}],
        },
        "variables[0].name",
    ),
    (
        "alice",
        "post",
        "/api/v1/notifications/consents",
        {"channel": "email", "granted": True, "source": "form", "evidence": {"ip": "\x00"}},
        "evidence.ip",
    ),
    ("alice", "post", "/api/v1/devices", {"platform": "ios", "token": "a\x00"}, "token"),
]


def _ids(case):
    _who, method, path, _body, field = case
    return f"{method} {path.split('?')[0]} {field}"


@pytest.mark.parametrize(("who", "method", "path", "body", "field"), CASES, ids=map(_ids, CASES))
def test_nul_is_a_400_naming_the_field(
    who, method, path, body, field, as_user, alice, service, conversation
):
    client = service if who == "service" else as_user(alice)
    url = path.format(c=conversation["id"])
    kwargs = {"format": "json"} if body is not None else {}
    response = getattr(client, method)(url, body, **kwargs)
    assert response.status_code == 400, response.content
    answer = response.json()
    assert answer["code"] == "validation_error", answer
    assert field in answer["fields"], answer


def test_nul_in_a_form_field(as_user, alice):
    response = as_user(alice).post(
        "/api/v1/notifications/consents",
        "channel=email&granted=true&source=form&note=a%00b",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "validation_error"
    assert "note" in response.json()["fields"]


def test_nul_in_a_multipart_field_and_file_name(as_user, alice):
    client = as_user(alice)
    png = b"\x89PNG\r\n\x1a\n"
    response = client.post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile("a.png", png, "image/png"), "caption": "x\x00"},
    )
    assert response.status_code == 400, response.content
    assert "caption" in response.json()["fields"]
    response = client.post(
        "/api/v1/attachments", {"file": SimpleUploadedFile("a\x00.png", png, "image/png")}
    )
    assert response.status_code == 400, response.content
    assert "file" in response.json()["fields"]


def test_text_without_nul_still_passes(as_user, alice, conversation):
    """The check refuses NUL only: other control characters and escapes are data."""
    response = as_user(alice).post(
        f"/api/v1/conversations/{conversation['id']}/messages",
        {"content": "tab\there \\u0000 literal", "metadata": {"k\\u0000": "\x01"}},
        format="json",
    )
    assert response.status_code == 201, response.content
