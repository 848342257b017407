"""Tracking end to end with the real queue: the API accepts, a Celery worker renders and sends
the tracked email, and the recipient's mail client fetching its pixel and following its link
records an open and a click with the delivery's dimensions."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.test import Client

from analytics.models import Event
from conftest import wait_for
from notifications.models import Delivery, OutboxMessage

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)


def test_an_email_sent_by_the_worker_brings_back_its_open_and_click(celery_worker, sender, alice):
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "alice"}],
            "category": "reminders",  # tracking allowed
            "channels": ["email"],
            "content": {
                "subject": "Your appointment",
                "html": '<p>Tomorrow at 9. <a href="https://clinic.example.com/a/42">Move it</a></p>',
            },
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    delivery_id = response.json()["notifications"][0]["deliveries"][0]["id"]
    wait_for(
        lambda: Delivery.objects.filter(id=delivery_id, status="delivered").exists(),
        30,
        what="the worker to send the email",
    )
    html = OutboxMessage.objects.get(delivery_id=delivery_id).html
    pixel = urlsplit(re.search(r'<img src="([^"]+/t/o/[^"]+)"', html).group(1)).path
    link = urlsplit(re.search(r'href="([^"]+/t/c/[^"]+)"', html).group(1)).path
    client = Client()

    assert client.get(pixel, HTTP_USER_AGENT=SAFARI).content.startswith(b"GIF89a")
    redirect = client.get(link, HTTP_USER_AGENT=SAFARI)

    assert redirect.status_code == 302
    assert redirect["Location"] == "https://clinic.example.com/a/42"
    by_type = {e.type: e for e in Event.objects.filter(delivery_id=delivery_id)}
    assert {"queued", "sent", "delivered", "opened", "clicked"} <= set(by_type)
    for type_ in ("opened", "clicked"):
        event = by_type[type_]
        assert (event.channel, event.provider, event.category, event.user_id) == (
            "email",
            "outbox",
            "reminders",
            alice.id,
        )
        assert event.machine is False
        assert event.notification_id == by_type["sent"].notification_id
    assert by_type["sent"].queue_wait_ms is not None
    assert by_type["sent"].api_to_provider_ms >= by_type["sent"].latency_ms
