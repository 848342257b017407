"""Batches of deliveries: one claim, each sent once, a failure handled alone, successes recorded
together; and the task the API publishes (``deliver_many``) through a real worker."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.db.models import F
from werkzeug import Response

from analytics.models import Event
from communication.compliance.keyed import lookup_hash
from communication.models import User
from conftest import wait_for
from notifications import services
from notifications.models import Delivery, OutboxMessage
from notifications.tasks import deliver_many
from notifications.tests.fakes import sendgrid_in_process

SENDGRID = "/sendgrid/v3/mail/send"


@pytest.fixture
def sendgrid(settings, httpserver):
    sendgrid_in_process(settings, httpserver)
    settings.DELIVERY_RETRY_BASE_SECONDS = 60
    return httpserver


def queue_emails(addresses: list[str]) -> list[str]:
    outcome = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"email": a} for a in addresses],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Hi", "body": "Hello."},
        },
    )
    return [n["deliveries"][0]["id"] for n in outcome.body["notifications"]]


def recipient_of(request) -> str:
    return json.loads(request.data)["personalizations"][0]["to"][0]["email"]


@pytest.mark.django_db
def test_a_batch_sends_each_delivery_once_and_records_each(sendgrid):
    sendgrid.expect_request(SENDGRID).respond_with_data("", status=202)
    ids = queue_emails([f"b{i}@example.com" for i in range(5)])

    outcomes = services.deliveries_attempt([*ids, ids[0]])  # a duplicate id is sent once

    assert outcomes == {i: "sent" for i in ids}
    assert sorted(recipient_of(r) for r, _ in sendgrid.log) == [
        f"b{i}@example.com" for i in range(5)
    ]
    for delivery in Delivery.objects.filter(id__in=ids):
        assert (delivery.status, delivery.attempts, delivery.lease_until) == ("sent", 1, None)
        assert delivery.provider == "sendgrid" and delivery.provider_message_id
        assert delivery.sent_at is not None
    sent = Event.objects.filter(type="sent", delivery_id__in=ids)
    assert sent.count() == 5
    assert {e.caller for e in sent} == {"svc"} and all(e.latency_ms is not None for e in sent)
    # A second copy of the task finds nothing to claim.
    assert services.deliveries_attempt(ids) == {i: "not_claimed" for i in ids}
    assert len(sendgrid.log) == 5


@pytest.mark.django_db
def test_a_failure_in_a_batch_retries_alone_while_the_others_are_sent(sendgrid):
    def answer(request):
        if recipient_of(request) == "flaky@example.com":
            return Response("upstream down", status=503)
        return Response("", status=202)

    sendgrid.expect_request(SENDGRID).respond_with_handler(answer)
    ids = queue_emails(["a@example.com", "flaky@example.com", "c@example.com"])

    outcomes = services.deliveries_attempt(ids)

    assert [outcomes[i] for i in ids] == ["sent", "retry", "sent"]
    by_id = {str(d.id): d for d in Delivery.objects.filter(id__in=ids)}
    assert [by_id[i].status for i in ids] == ["sent", "queued", "sent"]
    flaky = by_id[ids[1]]
    assert flaky.provider_attempts == 1 and flaky.next_attempt_at is not None
    assert "503" in flaky.error or "upstream" in flaky.error
    types = list(
        Event.objects.filter(delivery_id=ids[1]).order_by("id").values_list("type", flat=True)
    )
    assert types == ["queued", "retry"]
    # Not due yet: a copy of the task sends nothing.
    assert services.deliveries_attempt([ids[1]]) == {ids[1]: "not_claimed"}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_delivery_taken_over_by_another_worker_is_not_recorded_by_the_first(sendgrid):
    """The bulk record keeps the claim's condition: only the holder of the lease writes."""

    def answer(request):
        # While this worker waits for the provider, its lease expires and another claims it
        # (this runs in the fake provider's thread, on its own database connection).
        try:
            Delivery.objects.filter(address_hash=lookup_hash(recipient_of(request))).update(
                attempts=F("attempts") + 1
            )
        finally:
            connection.close()
        return Response("", status=202)

    sendgrid.expect_request(SENDGRID).respond_with_handler(answer)
    (only,) = queue_emails(["late@example.com"])

    assert services.deliveries_attempt([only]) == {only: "sent"}
    delivery = Delivery.objects.get(id=only)
    assert delivery.status == "sending", "left to the worker that holds it now"
    assert not Event.objects.filter(delivery_id=only, type="sent").exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_api_publishes_one_batch_task_that_a_worker_delivers(celery_worker, sender):
    users = [
        User.objects.create(username=f"m{i}", external_id=f"m{i}", email=f"m{i}@example.com")
        for i in range(3)
    ]
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": u.external_id} for u in users],
            "channels": ["email"],
            "content": {"subject": "Hi", "body": "Hello."},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    ids = [n["deliveries"][0]["id"] for n in response.json()["notifications"]]

    def all_delivered():
        return set(Delivery.objects.filter(id__in=ids).values_list("status", flat=True)) == {
            "delivered"
        }

    wait_for(all_delivered, 30, what="the batch")
    # The same batch again (a redelivered message) sends nothing more.
    deliver_many.apply_async((ids,), queue="transactional")
    wait_for(lambda: Delivery.objects.filter(id__in=ids, attempts=1).count() == 3, 10)
    assert OutboxMessage.objects.filter(delivery_id__in=ids).count() == 3
