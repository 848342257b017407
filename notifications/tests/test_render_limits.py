"""A template past a render limit: ``400 render_limit`` when the send renders it (the in-app
body), a failed delivery with that reason when the worker does."""

from __future__ import annotations

import time

import pytest

from analytics.models import Event
from notifications import services
from notifications.models import Delivery, NotificationRequest

pytestmark = pytest.mark.django_db

WORDWRAP = '{{ ("x" * 500000)|wordwrap(1)|length }}'


def test_a_hostile_in_app_body_is_refused_quickly_and_nothing_is_written(sender, alice):
    started = time.monotonic()
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "alice"}],
            "category": "alerts",
            "channels": ["in_app"],
            "content": {"title": "Hi", "body": WORDWRAP},
        },
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "render_limit"
    assert time.monotonic() - started < 2.0
    assert not NotificationRequest.objects.exists()


def test_the_worker_fails_a_delivery_past_a_render_limit_with_that_reason(sender, alice):
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "alice"}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Hi", "html": f"<p>{WORDWRAP}</p>"},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    (delivery_id,) = Delivery.objects.values_list("id", flat=True)

    assert services.delivery_attempt(delivery_id) == "failed"
    delivery = Delivery.objects.get(id=delivery_id)
    assert delivery.status == "failed"
    assert "wordwrap" in delivery.error
    failed = Event.objects.get(delivery_id=delivery_id, type="failed")
    assert failed.data["reason"] == "render_limit"
