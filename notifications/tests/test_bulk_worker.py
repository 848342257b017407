"""Bulk sends through a real Celery worker (the session worker consumes the bulk queue): the
fan-out renders each recipient's own data, applies the single send's rules, and never writes a
recipient twice; identity look-ups of unknown users; the sweep resumes a stalled batch."""

from __future__ import annotations

import threading

import pytest
from django.db import connections
from rest_framework.test import APIClient

from communication.models import Category, User
from conftest import wait_for
from notifications import tasks
from notifications.models import (
    BulkRecipient,
    Delivery,
    Notification,
    NotificationRequest,
    OutboxMessage,
    Suppression,
)
from notifications.services import bulk

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

INLINE = {"subject": "Hello {{ name }}", "body": "Your code is {{ code }}."}


def post(client, recipients, **body):
    body = {"content": INLINE, "data": {"code": "0000", "name": "friend"}, **body}
    body["recipients"] = recipients
    return client.post("/api/v1/notifications/bulk", body, format="json")


def status(client, batch_id):
    response = client.get(f"/api/v1/notifications/batches/{batch_id}")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_worker_fans_out_and_the_outbox_gets_each_recipients_text(celery_worker, sender):
    User.objects.create(username="w1", external_id="w1", email="w1@example.com", name="Wanda")
    Suppression.objects.create(channel="email", address="s@example.com", reason="hard_bounce")
    recipients = [
        {"user_id": "w1"},
        {"email": "a@example.com", "data": {"name": "Ann", "code": "1111"}},
        {"email": "b@example.com", "data": {"name": "Ben", "code": "2222"}},
        {"email": "s@example.com", "data": {"name": "Sue"}},
        {"user_id": "ghost"},
    ]
    response = post(sender, recipients, channels=["email"], category="alerts")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == 4
    assert body["rejected"] == [
        {"index": 4, "code": "unknown_user", "detail": "Unknown user 'ghost'."}
    ]

    done = wait_for(
        lambda: (s := status(sender, body["batch_id"]))["done"] and s, 30, what="the batch"
    )
    assert done["by_status"] == {
        **dict.fromkeys(Delivery.Status.values, 0),
        "delivered": 3,
        "suppressed": 1,
    }
    texts = {m.to: (m.subject, m.text) for m in OutboxMessage.objects.filter(channel="email")}
    assert texts == {
        "w1@example.com": ("Hello friend", "Your code is 0000."),
        "a@example.com": ("Hello Ann", "Your code is 1111."),
        "b@example.com": ("Hello Ben", "Your code is 2222."),
    }
    assert not BulkRecipient.objects.exists()
    assert "bulk_fan_out" in celery_worker.log.read_text()


def test_opted_out_recipients_are_skipped_as_in_single_sends(celery_worker, sender):
    marketing = Category.objects.get(key="marketing")
    assert marketing.requires_consent
    User.objects.create(username="m1", external_id="m1", email="m1@example.com")
    batch_id = post(sender, [{"user_id": "m1"}], category="marketing", channels=["email"]).json()[
        "batch_id"
    ]
    done = wait_for(lambda: (s := status(sender, batch_id))["done"] and s, 30, what="the batch")
    assert done["by_status"]["skipped"] == 1
    assert Delivery.objects.get().reason == "no consent for marketing on email"


def stalled_batch(emails: list[str]) -> NotificationRequest:
    """A batch whose rows are committed and whose fan-out was never enqueued (a lost message)."""
    request = NotificationRequest.objects.create(
        caller="billing",
        category_id="alerts",
        content=INLINE,
        channels=["email"],
        bulk=True,
        accepted=len(emails),
        data={"code": "7", "name": "x"},
        priority="low",
    )
    BulkRecipient.objects.bulk_create(
        BulkRecipient(request=request, position=i, spec={"email": e}, email=e)
        for i, e in enumerate(emails)
    )
    return request


def test_two_fan_outs_at_once_write_each_recipient_once():
    request = stalled_batch([f"c{i}@example.com" for i in range(60)])
    results = []

    def run():
        try:
            results.append(bulk.bulk_fan_out(request.id, batch=7))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["written"] for r in results) == 60
    assert all(r["written"] for r in results), "both took chunks"
    assert Notification.objects.filter(request=request).count() == 60
    assert Notification.objects.values("email").distinct().count() == 60
    assert not BulkRecipient.objects.exists()


def test_the_sweep_resumes_a_batch_nobody_is_fanning_out(celery_worker, sender):
    request = stalled_batch(["l1@example.com", "l2@example.com"])
    assert tasks.sweep()["bulk_resumed"] == 1
    assert bulk.bulk_resume_stalled() == 0, "queued already: not twice"
    wait_for(lambda: status(sender, request.id)["done"], 30, what="the resumed batch")
    assert OutboxMessage.objects.filter(channel="email").count() == 2


@pytest.fixture
def remote_sender(identity_provider):
    """A service client whose token the identity service signed (its JWKS is installed)."""
    client = APIClient()
    token = identity_provider.token("billing", client_id="billing", scope="notifications:send")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_unknown_users_are_asked_of_the_identity_service(identity_provider, remote_sender):
    for sub in ("n1", "n2", "n3"):
        identity_provider.users[sub] = {"sub": sub, "email": f"{sub}@example.com"}
    User.objects.create(username="k1", external_id="k1", email="k1@example.com")
    response = post(
        remote_sender,
        [{"user_id": u} for u in ("k1", "n1", "n2", "x1", "n3", "x2")],
        channels=["email"],
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == 4
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (3, "unknown_user"),
        (5, "unknown_user"),
    ]
    assert identity_provider.user_hits == 5, "one look-up per unknown id, none for k1"
    assert set(BulkRecipient.objects.values_list("user__external_id", flat=True)) == {
        "k1",
        "n1",
        "n2",
        "n3",
    }


def test_identity_down_rejects_only_the_unknown_rows(identity_provider, remote_sender):
    identity_provider.down = True
    User.objects.create(username="k2", external_id="k2", email="k2@example.com")
    body = post(remote_sender, [{"user_id": "k2"}, {"user_id": "z9"}]).json()
    assert body["accepted"] == 1
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [(1, "identity_unavailable")]
