"""The admin pages staff use: delivery log with timeline, outbox, provider health, send test."""

from __future__ import annotations

import pytest

from analytics.models import Event
from communication.compliance.keyed import lookup_hash
from communication.models import User
from notifications import services
from notifications.models import Delivery, OutboxMessage

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    admin = User.objects.create_superuser(username="ops", email="ops@example.com", password="pw")
    client.force_login(admin)
    return client


def test_delivery_log_and_timeline(staff_client, django_assert_max_num_queries):
    outcome = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"email": f"u{i}@example.com"} for i in range(20)],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "s", "body": "b"},
            "data": {},
        },
    )
    delivery_id = outcome.body["notifications"][0]["deliveries"][0]["id"]
    services.delivery_attempt(delivery_id)
    with django_assert_max_num_queries(15):
        page = staff_client.get("/admin/notifications/delivery/")
    assert page.status_code == 200
    assert b"u0@example.com" in page.content
    detail = staff_client.get(f"/admin/notifications/delivery/{delivery_id}/change/")
    assert detail.status_code == 200
    # The events are on the notification's timeline, which the delivery's page links to.
    notification_id = outcome.body["notifications"][0]["id"]
    timeline = f"/admin/notifications/notification/{notification_id}/timeline/"
    assert timeline.encode() in detail.content
    page = staff_client.get(timeline)
    assert page.status_code == 200
    assert b'data-type="queued"' in page.content and b'data-type="sent"' in page.content
    assert b"outbox" in page.content


def test_outbox_provider_health_and_send_test(staff_client):
    response = staff_client.post(
        "/admin/notifications/delivery/send-test/",
        {"channel": "email", "to": "Someone@Example.com", "subject": "Hi", "body": "Test"},
    )
    assert response.status_code == 302
    delivery = Delivery.objects.get(address_hash=lookup_hash("someone@example.com"))
    services.delivery_attempt(delivery.id)
    message = OutboxMessage.objects.get(to_hash=lookup_hash("someone@example.com"))
    assert staff_client.get("/admin/notifications/outboxmessage/").status_code == 200
    page = staff_client.get(f"/admin/notifications/outboxmessage/{message.id}/change/")
    assert page.status_code == 200
    health = staff_client.get("/admin/notifications/delivery/provider-health/")
    assert health.status_code == 200 and b"outbox" in health.content
    bad = staff_client.post(
        "/admin/notifications/delivery/send-test/",
        {"channel": "sms", "to": "12", "subject": "Hi", "body": "Test"},
    )
    assert bad.status_code == 200 and b"phone" in bad.content


def test_resending_ambiguous_deliveries_records_it_and_sends_them_again(
    staff_client, django_capture_on_commit_callbacks
):
    outcome = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"email": "amb@example.com"}, {"email": "ok@example.com"}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "s", "body": "b"},
            "data": {},
        },
    )
    ambiguous, sent = (n["deliveries"][0]["id"] for n in outcome.body["notifications"])
    services.deliveries_attempt([ambiguous, sent])
    # What a provider timing out after the request left leaves behind (RESEND_AMBIGUOUS off).
    Delivery.objects.filter(id=ambiguous).update(status="ambiguous")

    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        response = staff_client.post(
            "/admin/notifications/delivery/",
            {"action": "resend_ambiguous", "_selected_action": [ambiguous, sent]},
        )
    assert response.status_code == 302
    assert Delivery.objects.get(id=ambiguous).status == "queued"
    assert Delivery.objects.get(id=sent).status == "delivered", "only ambiguous ones are resent"
    event = Event.objects.get(delivery_id=ambiguous, type="queued", data__was="ambiguous")
    assert event.data["resent_by"] == "admin:ops"
    assert len(enqueued) == 1

    services.deliveries_attempt([ambiguous])
    assert OutboxMessage.objects.filter(to_hash=lookup_hash("amb@example.com")).count() == 2
