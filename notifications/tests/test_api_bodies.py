"""Bodies the output serializers build are those the views built by hand before."""

from __future__ import annotations

import pytest

from notifications import selectors, services

pytestmark = pytest.mark.django_db


def test_preferences_body(as_user, alice):
    client = as_user(alice)
    put = client.put(
        "/api/v1/notifications/preferences",
        {"quiet_hours": {"start": "22:00", "end": "07:30"}},
        format="json",
    )
    assert put.status_code == 200, put.content
    body = client.get("/api/v1/notifications/preferences").json()
    assert body == put.json()
    assert body["quiet_hours"] == {"start": "22:00:00", "end": "07:30:00", "enabled": True}
    assert body["timezone"] == (alice.timezone or "UTC")
    assert body["categories"] == selectors.categories_with_preferences(alice)
    assert client.get("/api/v1/notifications/categories").json() == body["categories"]


def test_request_status_body(sender, alice):
    sent = sender.post(
        "/api/v1/notifications",
        {"recipients": [{"user_id": alice.external_id}], "content": {"title": "t", "body": "b"}},
        format="json",
    )
    assert sent.status_code == 202, sent.content
    request_id = sent.json()["request_id"]
    got = sender.get(f"/api/v1/notifications/requests/{request_id}/")
    request = services.request_get(caller="billing", request_id=request_id)
    assert got.json() == services.request_status(request)
