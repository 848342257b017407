"""The send payload's fast path answers exactly what SendSerializer answers, or steps aside."""

from __future__ import annotations

import pytest

from notifications.api.serializers import SendSerializer, plain_send_payload

CONTENT = {"subject": "Hi {{ n }}", "body": "Body", "html": "<p>x</p>", "data": {"k": 1}}
VALID = [
    {"recipients": [{"email": "A@Example.com"}], "content": CONTENT},
    {
        "recipients": [{"email": "a@example.com"}, {"user_id": "u1"}, {"phone": "+33612345678"}],
        "category": "alerts",
        "channels": ["email", "sms", "email"],
        "content": {"title": "T", "body": "B", "unknown": "dropped"},
        "data": {"n": 1, "nested": {"x": [1, 2]}},
        "locale": "fr",
        "priority": "high",
        "scheduled_at": None,
        "scheduled_local": False,
        "ignored": True,
    },
    {"recipients": [{"user_id": "u1"}], "template": "system-alert", "channels": "auto"},
    {"recipients": [{"email": "a@example.com"}], "content": {"body": "Grüße, 東京"}},
]
# Valid for DRF, but not plain: the serializer must be the one to answer.
UNUSUAL = [
    {"recipients": [{"email": "a@example.com"}], "content": {"body": " padded "}},
    {"recipients": [{"email": "a@example.com"}], "content": {"body": 12}},
    {"recipients": [{"email": "a@example.com"}], "content": {"action_url": "https://x.org"}},
    {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "locale": " fr"},
    {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "scheduled_local": "true"},
    {
        "recipients": [{"email": "a@example.com"}],
        "content": CONTENT,
        "scheduled_at": "2030-01-01T00:00:00Z",
    },
]
INVALID = [
    {},
    [],
    {"recipients": [], "content": CONTENT},
    {"recipients": [{"email": "nope"}], "content": CONTENT},
    {"recipients": [{"email": "a@example.com", "phone": "+33612345678"}], "content": CONTENT},
    {"recipients": [{"email": "a@example.com"}]},
    {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "template": "t"},
    {"recipients": [{"email": "a@example.com"}], "content": {}},
    {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "category": "no slug"},
    {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "category": None},
    {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "channels": ["fax"]},
    {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "priority": "asap"},
    {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "locale": "x" * 36},
    {"recipients": [{"email": "a@example.com"}], "content": {"body": "a\x00b"}},
    {"recipients": [{"email": "a@example.com"}], "content": {"subject": "s" * 999}},
    {"recipients": [{"email": "a@example.com"}], "content": CONTENT, "data": []},
]


@pytest.mark.parametrize("data", VALID)
def test_plain_requests_validate_as_the_serializer_does(data):
    serializer = SendSerializer(data=data)
    assert serializer.is_valid(), serializer.errors
    assert plain_send_payload(data) == serializer.validated_data
    assert SendSerializer.validated(data) == serializer.validated_data


@pytest.mark.parametrize("data", UNUSUAL)
def test_unusual_requests_are_left_to_the_serializer(data):
    serializer = SendSerializer(data=data)
    assert serializer.is_valid(), serializer.errors
    assert plain_send_payload(data) is None
    assert SendSerializer.validated(data) == serializer.validated_data


@pytest.mark.parametrize("data", INVALID)
def test_invalid_requests_are_answered_by_the_serializer(data):
    assert not SendSerializer(data=data).is_valid()
    assert plain_send_payload(data) is None
