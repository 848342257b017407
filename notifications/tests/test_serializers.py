"""The send payload: what SendSerializer keeps, converts and refuses (the one definition the
view and the schema share)."""

from __future__ import annotations

import pytest
from rest_framework.exceptions import ValidationError

from notifications.api.serializers import ScheduleSerializer, SendSerializer

CONTENT = {"subject": "Hi {{ n }}", "body": "Body", "html": "<p>x</p>", "data": {"k": 1}}


def test_defaults_fill_what_a_minimal_request_leaves_out():
    payload = SendSerializer.validated(
        {"recipients": [{"email": "a@example.com"}], "content": CONTENT}
    )
    assert payload == {
        "recipients": [{"email": "a@example.com"}],
        "category": "transactional",
        "channels": "auto",
        "content": CONTENT,
        "data": {},
        "locale": "",
        "priority": "normal",
        "scheduled_at": None,
        "scheduled_local": False,
    }


def test_values_are_normalised_and_unknown_keys_dropped():
    payload = SendSerializer.validated(
        {
            "recipients": [
                {"email": "a@example.com"},
                {"user_id": "u1"},
                {"phone": "+33 6 12 34 56 78"},
            ],
            "category": "alerts",
            "channels": ["email", "sms", "email"],
            "content": {"title": "T", "body": " padded ", "unknown": "dropped"},
            "data": {"n": 1, "nested": {"x": [1, 2]}},
            "locale": "fr",
            "priority": "high",
            "scheduled_at": "2030-01-01T00:00:00Z",
            "ignored": True,
        }
    )
    assert payload["recipients"][2] == {"phone": "+33612345678"}
    assert payload["channels"] == ["email", "sms"]  # duplicates removed, order kept
    assert payload["content"] == {"title": "T", "body": "padded"}  # trimmed, unknown dropped
    assert "ignored" not in payload
    assert payload["data"] == {"n": 1, "nested": {"x": [1, 2]}}
    assert payload["scheduled_at"].isoformat() == "2030-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "recipients"),
        ({"recipients": [], "content": CONTENT}, "recipients"),
        ({"recipients": [{"email": "nope"}], "content": CONTENT}, "recipients"),
        (
            {
                "recipients": [{"email": "a@example.com", "phone": "+33612345678"}],
                "content": CONTENT,
            },
            "recipients",
        ),
        ({"recipients": [{"email": "a@example.com"}]}, "template"),
        (
            {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "template": "t"},
            "template",
        ),
        (
            {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "category": "no slug"},
            "category",
        ),
        (
            {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "category": None},
            "category",
        ),
        (
            {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "channels": ["fax"]},
            "channels",
        ),
        (
            {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "priority": "asap"},
            "priority",
        ),
        (
            {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "locale": "x" * 36},
            "locale",
        ),
        ({"recipients": [{"email": "a@example.com"}], "content": {"body": "a\x00b"}}, "content"),
        (
            {"recipients": [{"email": "a@example.com"}], "content": {"subject": "s" * 999}},
            "content",
        ),
        (
            {"recipients": [{"email": "a@example.com"}], "content": {"action_url": "not a url"}},
            "content",
        ),
        ({"recipients": [{"email": "a@example.com"}], "content": CONTENT, "data": []}, "data"),
        (
            {
                "recipients": [{"email": "a@example.com"}],
                "content": CONTENT,
                "scheduled_local": "x",
            },
            "scheduled_local",
        ),
    ],
)
def test_invalid_requests_name_the_field(data, field):
    with pytest.raises(ValidationError) as caught:
        SendSerializer.validated(data)
    assert field in caught.value.detail


def test_a_list_body_is_refused():
    with pytest.raises(ValidationError):
        SendSerializer.validated([])


def test_schedule_requires_a_future_time():
    base = {"recipients": [{"email": "a@example.com"}], "content": CONTENT}
    with pytest.raises(ValidationError) as caught:
        ScheduleSerializer.validated(base)
    assert "scheduled_at" in caught.value.detail
    with pytest.raises(ValidationError) as caught:
        ScheduleSerializer.validated({**base, "scheduled_at": "2000-01-01T00:00:00Z"})
    assert "scheduled_at" in caught.value.detail
    assert ScheduleSerializer.validated({**base, "scheduled_at": "2099-01-01T00:00:00Z"})
