"""POST /api/v1/notifications/bulk and GET /api/v1/notifications/batches/{id}: per-row
rejections, the rows committed at the 202, set-based writes, the fan-out on the bulk queue
(a real worker), the batch's status."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from communication.compliance.keyed import lookup_hash
from communication.models import User
from notifications.models import (
    BulkRecipient,
    Delivery,
    IdempotencyKey,
    Notification,
    NotificationRequest,
    Suppression,
)
from notifications.services import bulk

INLINE = {"subject": "Hello {{ name }}", "body": "Your code is {{ code }}."}


def post(client, recipients, key: str = "", **body):
    body.setdefault("content", INLINE)
    body.setdefault("data", {"code": "0000"})
    body["recipients"] = recipients
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post("/api/v1/notifications/bulk", body, format="json", **headers)


@pytest.mark.django_db
def test_bulk_answers_202_with_per_row_rejections(sender, alice):
    response = post(
        sender,
        [
            {"user_id": "alice", "data": {"name": "Alice"}},
            {"email": "Bob@Example.com", "data": {"name": "Bob"}},
            {"phone": "+33 6 12 34 56 78"},
            {"email": "not-an-email"},
            {"phone": "12"},
            {"user_id": "nobody"},
            {"user_id": "alice", "email": "a@example.com"},
            {},
            "alice",
            {"email": "c@example.com", "data": [1]},
            {"email": "d@example.com", "data": {"big": "x" * (bulk.ROW_DATA_MAX_BYTES + 1)}},
            {"email": "e@example.com", "data": {"n": {"deep": "x" * bulk.ROW_DATA_MAX_BYTES}}},
            # Short in characters, over the limit as JSON text (each one is \u00e9).
            {"email": "f@example.com", "data": {"u": "é" * (bulk.ROW_DATA_MAX_BYTES // 5)}},
            {"email": "g@example.com", "data": {"u": "é" * 100, "n": 10**20, "f": 1.5}},
        ],
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body) == {"batch_id", "status_url", "accepted", "rejected"}
    assert body["status_url"] == f"/api/v1/notifications/batches/{body['batch_id']}"
    assert body["accepted"] == 4
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (3, "invalid_email"),
        (4, "invalid_phone"),
        (5, "unknown_user"),
        (6, "invalid_recipient"),
        (7, "invalid_recipient"),
        (8, "invalid_recipient"),
        (9, "invalid_data"),
        (10, "data_too_large"),
        (11, "data_too_large"),
        (12, "data_too_large"),
    ]
    assert all(r["detail"] for r in body["rejected"])
    # Committed with the 202: the batch and one row per accepted recipient.
    request = NotificationRequest.objects.get(id=body["batch_id"])
    assert request.bulk and request.accepted == 4 and len(request.rejected) == 10
    rows = list(BulkRecipient.objects.filter(request=request).order_by("position"))
    assert [(r.position, r.user_id, r.email, r.phone) for r in rows] == [
        (0, alice.pk, "", ""),
        (1, None, "bob@example.com", ""),
        (2, None, "", "+33612345678"),
        (13, None, "g@example.com", ""),
    ]
    assert rows[0].data == {"name": "Alice"} and rows[2].data == {}


@pytest.mark.django_db
def test_over_ten_thousand_recipients_is_413_before_any_row_is_checked(sender, settings):
    response = post(sender, [{"email": "x"}] * (settings.BULK_MAX_RECIPIENTS + 1))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert not NotificationRequest.objects.exists()


@pytest.mark.django_db
def test_unknown_category_or_template_refuses_the_whole_request(sender):
    response = post(sender, [{"email": "a@example.com"}], category="nope")
    assert (response.status_code, response.json()["code"]) == (400, "unknown_category")
    response = post(sender, [{"email": "a@example.com"}], content=None, template="no-such")
    assert (response.status_code, response.json()["code"]) == (400, "unknown_template")
    response = post(sender, [{"email": "a@example.com"}], channels=["fax"])
    assert response.status_code == 400
    assert not NotificationRequest.objects.exists()


@pytest.mark.django_db
def test_a_row_missing_a_template_variable_is_rejected_alone(sender):
    base = {
        "title": "Maintenance",
        "severity": "info",
        "occurred_at": "2026-03-01T09:30:00Z",
        "name": "Ops",
    }
    response = post(
        sender,
        [{"email": "a@example.com", "data": {"message": "m"}}, {"email": "b@example.com"}],
        content=None,
        template="system-alert",
        category="system",
        channels=["email"],
        data=base,
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == 1, body
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [(1, "missing_variable")]
    assert "message" in body["rejected"][0]["detail"]


@pytest.mark.django_db
def test_ten_thousand_recipients_in_a_few_statements(sender, settings):
    recipients = [
        {"email": f"r{i}@example.com", "data": {"name": f"R{i}"}}
        for i in range(settings.BULK_MAX_RECIPIENTS)
    ]
    User.objects.create(username="u1", external_id="u1", email="u1@example.com")
    recipients[0] = {"user_id": "u1"}
    with CaptureQueriesContext(connection) as queries:
        response = post(sender, recipients)
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == settings.BULK_MAX_RECIPIENTS
    inserts = [q["sql"] for q in queries if "bulkrecipient" in q["sql"].lower()]
    # The request and its ten thousand rows: one statement.
    assert len(inserts) == 1 and "notificationrequest" in inserts[0].lower()
    # The category, the users look-up, the insert.
    assert len(queries) == 3, [q["sql"][:120] for q in queries]
    assert BulkRecipient.objects.count() == settings.BULK_MAX_RECIPIENTS


@pytest.mark.django_db
def test_replay_returns_the_first_answer(sender, alice):
    first = post(sender, [{"user_id": "alice"}, {"user_id": "ghost"}], key="k-1")
    again = post(sender, [{"user_id": "alice"}, {"user_id": "ghost"}], key="k-1")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replay"] == "true"
    assert NotificationRequest.objects.count() == 1
    assert BulkRecipient.objects.count() == 1
    other = post(sender, [{"user_id": "alice"}], key="k-1")
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_mismatch")
    assert IdempotencyKey.objects.get(key="k-1").status_code == 202


@pytest.mark.django_db
def test_another_callers_batch_is_404(sender, alice, make_service_token):
    batch_id = post(sender, [{"user_id": "alice"}]).json()["batch_id"]
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('shop')}")
    assert other.get(f"/api/v1/notifications/batches/{batch_id}").status_code == 404
    assert sender.get(f"/api/v1/notifications/batches/{uuid.uuid4()}").status_code == 404
    assert sender.get(f"/api/v1/notifications/batches/{batch_id}").status_code == 200


@pytest.mark.django_db
def test_batch_status_before_fan_out_in_two_queries(sender, alice, django_assert_num_queries):
    batch_id = post(sender, [{"user_id": "alice"}]).json()["batch_id"]
    with django_assert_num_queries(2):
        body = bulk.batch_status(caller="billing", batch_id=batch_id)
    assert body["by_status"] == dict.fromkeys(Delivery.Status.values, 0)
    assert body["done"] is False
    assert body["accepted"] == 1 and body["rejected"] == []


@pytest.mark.django_db
def test_fan_out_writes_in_chunks_and_twice_creates_nothing_more(sender, alice, bob, settings):
    Suppression.objects.create(channel="email", address="s@example.com", reason="hard_bounce")
    recipients = [{"user_id": "alice"}, {"user_id": "bob"}] + [
        {"email": f"p{i}@example.com", "data": {"name": f"P{i}"}} for i in range(5)
    ]
    recipients.append({"email": "s@example.com"})
    batch_id = post(sender, recipients, channels=["email"]).json()["batch_id"]
    counts = bulk.bulk_fan_out(batch_id, batch=3)
    assert counts == {"written": 8, "refused": 0, "dropped": 0}
    assert not BulkRecipient.objects.exists()
    assert Notification.objects.filter(request_id=batch_id).count() == 8
    assert bulk.bulk_fan_out(batch_id) == {"written": 0, "refused": 0, "dropped": 0}
    assert Notification.objects.filter(request_id=batch_id).count() == 8
    status = bulk.batch_status(caller="billing", batch_id=batch_id)
    assert status["by_status"]["queued"] == 7
    assert status["by_status"]["suppressed"] == 1
    p3 = Notification.objects.get(email_hash=lookup_hash("p3@example.com"))
    assert p3.data == {"code": "0000", "name": "P3"}


@pytest.mark.django_db
def test_fan_out_costs_the_same_queries_per_chunk_whatever_its_size(sender, alice, bob):
    def queries_for(n: int) -> int:
        recipients = [{"email": f"q{n}-{i}@example.com"} for i in range(n)]
        everyone = recipients + [{"user_id": "alice"}, {"user_id": "bob"}]
        batch_id = post(sender, everyone, data={"code": "0", "name": "x"}).json()["batch_id"]
        with CaptureQueriesContext(connection) as queries:
            bulk.bulk_fan_out(batch_id, batch=n + 2)
        assert Notification.objects.filter(request_id=batch_id).count() == n + 2
        return len(queries)

    # A chunk (request, lock, delete, the rules' facts, the write) and the look that finds none left.
    assert queries_for(3) == queries_for(40) == 18


@pytest.mark.django_db
def test_a_recipient_whose_message_cannot_render_is_refused_alone(sender, alice, bob):
    alice.name = "Alice"
    alice.save()
    # Inline content and in-app items (alerts' defaults): bob has no name to render.
    body = post(sender, [{"user_id": "alice"}, {"user_id": "bob"}], data={"code": "1"}).json()
    assert body["accepted"] == 2
    assert bulk.bulk_fan_out(body["batch_id"]) == {"written": 1, "refused": 1, "dropped": 0}
    assert Notification.objects.get(request_id=body["batch_id"]).user == alice
    status = bulk.batch_status(caller="billing", batch_id=body["batch_id"])
    assert status["accepted"] == 1
    assert [(r["index"], r["code"]) for r in status["rejected"]] == [(1, "missing_variable")]
