"""The queue end to end: a real Celery worker delivers what the API accepted."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from analytics.models import Event
from communication.models import User
from conftest import wait_for
from notifications import services
from notifications.enqueue import enqueue_many
from notifications.models import Delivery, OutboxMessage
from notifications.tasks import deliver_many

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

INLINE = {
    "subject": "Hello {{ name }}",
    "body": "Your code is {{ code }}.",
    "html": "<p>Your code is <b>{{ code }}</b>.</p>",
}


def status_of(delivery_id):
    return Delivery.objects.filter(id=delivery_id).values_list("status", flat=True).first()


def test_worker_delivers_to_the_outbox_when_no_provider_is_configured(celery_worker, sender):
    User.objects.create(
        username="w1", external_id="w1", email="w1@example.com", phone="+33612345678"
    )
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "w1"}],
            "category": "alerts",
            "channels": ["email", "sms"],
            "content": INLINE,
            "data": {"name": "Wanda", "code": "4242"},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    ids = [d["id"] for d in response.json()["notifications"][0]["deliveries"]]
    wait_for(lambda: all(status_of(i) == "delivered" for i in ids), 30, what="deliveries")
    email = OutboxMessage.objects.get(channel="email")
    assert email.to == "w1@example.com"
    assert email.subject == "Hello Wanda"
    assert "<b>4242</b>" in email.html and "4242" in email.text
    assert "List-Unsubscribe" in email.payload["headers"]
    sms = OutboxMessage.objects.get(channel="sms")
    assert (sms.to, sms.text) == ("+33612345678", "Your code is 4242.")
    delivery = Delivery.objects.get(id=ids[0])
    assert delivery.provider == "outbox" and delivery.attempts == 1
    assert Event.objects.filter(delivery_id=delivery.id, type="sent").exists()


def test_a_task_delivered_several_times_sends_once(celery_worker, sender):
    User.objects.create(username="w2", external_id="w2", email="w2@example.com")
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "w2"}],
            "channels": ["email"],
            "content": INLINE,
            "data": {"name": "x", "code": "1"},
        },
        format="json",
    )
    delivery_id = response.json()["notifications"][0]["deliveries"][0]["id"]
    copies = [
        deliver_many.apply_async(([delivery_id],), queue="transactional").id for _ in range(4)
    ]
    # The worker logs each task it ran: wait until it has run every copy.
    wait_for(
        lambda: all(
            f"deliver_many[{task_id}] succeeded" in celery_worker.log.read_text()
            for task_id in copies
        ),
        30,
        what="the worker to run every copy",
    )
    assert status_of(delivery_id) == "delivered"
    assert OutboxMessage.objects.filter(delivery_id=delivery_id).count() == 1
    assert Delivery.objects.get(id=delivery_id).attempts == 1


def test_scheduled_send_is_released_at_its_time(celery_worker, sender):
    User.objects.create(username="w3", external_id="w3", email="w3@example.com")
    at = timezone.now() + dt.timedelta(seconds=2)
    response = sender.post(
        "/api/v1/notifications/schedule",
        {
            "recipients": [{"user_id": "w3"}],
            "channels": ["email", "in_app"],
            "content": INLINE,
            "data": {"name": "x", "code": "2"},
            "scheduled_at": at.isoformat(),
        },
        format="json",
    )
    deliveries = {d["channel"]: d["id"] for d in response.json()["notifications"][0]["deliveries"]}
    assert status_of(deliveries["email"]) == "scheduled"
    assert services.deliveries_sweep()["released"] == 0, "nothing is due yet"
    wait_for(lambda: timezone.now() >= at, 5, what="the scheduled time")
    assert services.deliveries_sweep()["released"] == 2
    assert status_of(deliveries["in_app"]) == "delivered"
    wait_for(lambda: status_of(deliveries["email"]) == "delivered", 30, what="the email")


def test_a_queued_delivery_that_was_never_enqueued_is_swept(celery_worker):
    """A commit whose enqueue was lost (broker down at that instant) is caught by the sweep."""
    User.objects.create(username="w4", external_id="w4", email="w4@example.com")
    outcome = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"user_id": "w4"}],
            "channels": ["email"],
            "content": INLINE,
            "data": {"name": "x", "code": "3"},
            "category": "alerts",
            "scheduled_at": timezone.now() + dt.timedelta(days=1),
        },
    )
    delivery_id = outcome.body["notifications"][0]["deliveries"][0]["id"]
    # A queued row with no task anywhere for it, as a lost enqueue leaves behind.
    Delivery.objects.filter(id=delivery_id).update(
        status="queued", updated_at=timezone.now() - dt.timedelta(minutes=5)
    )
    # Proof that no task exists for it: an id published after this point, on the same queue and
    # through the same buffer, reaches the worker after anything already waiting for it.
    marker = str(uuid.uuid4())
    enqueue_many([(marker, Delivery.objects.get(id=delivery_id).priority)])
    wait_for(
        lambda: f"'{marker}': 'not_claimed'" in celery_worker.log.read_text(),
        30,
        what="the worker to run the marker task",
    )
    assert status_of(delivery_id) == "queued", "the worker had nothing for it"
    assert services.deliveries_sweep()["requeued"] == 1
    wait_for(lambda: status_of(delivery_id) == "delivered", 30, what="the swept delivery")
