"""``POST /notifications/cancel``: a caller cancels by its own ``cancellation_key`` what has not
been handed to a provider, and learns what it was too late for."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.models import Event
from notifications import services
from notifications.models import Delivery, NotificationRequest

CANCEL = "/api/v1/notifications/cancel"


@pytest.fixture(autouse=True)
def _nothing_consumes(settings):
    settings.CELERY_QUEUE_PREFIX = "void-"  # deliveries stay queued until the test sends them


@pytest.fixture
def shop(make_service_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('shop')}")
    return client


def send(client, key: str, **body) -> str:
    response = client.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "alice"}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Order 42", "body": "Shipped."},
            "cancellation_key": key,
            **body,
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()["notifications"][0]["deliveries"][0]["id"]


def test_cancel_stops_what_is_pending_and_reports_what_went(
    sender, alice, django_assert_num_queries
):
    went = send(sender, "order-42")
    assert services.delivery_attempt(went) == "sent"  # to the development outbox
    queued = send(sender, "order-42")
    later = send(
        sender, "order-42", scheduled_at=(timezone.now() + dt.timedelta(days=1)).isoformat()
    )
    other = send(sender, "order-43")
    assert NotificationRequest.objects.get(notifications__deliveries__id=queued).cancellation_key

    sender.post(CANCEL, {"cancellation_key": "warm-up"}, format="json")
    # The cancel (one statement, which reads what the events need), the events, the
    # already-sent list.
    with django_assert_num_queries(3):
        response = sender.post(CANCEL, {"cancellation_key": "order-42"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"cancelled": 2, "already_sent": [went]}
    for delivery_id in (queued, later):
        d = Delivery.objects.get(id=delivery_id)
        assert (d.status, d.reason) == ("cancelled", "cancelled by caller")
        assert d.cancelled_at is not None
        assert Event.objects.filter(delivery_id=delivery_id, type="cancelled").count() == 1
    assert Delivery.objects.get(id=other).status == "queued"
    # A cancelled delivery is never claimed.
    assert services.delivery_attempt(queued) == "not_claimed"
    # Cancelling again cancels nothing more and still reports what went.
    again = sender.post(CANCEL, {"cancellation_key": "order-42"}, format="json")
    assert again.json() == {"cancelled": 0, "already_sent": [went]}


def test_another_callers_key_cancels_nothing(sender, shop, alice):
    mine = send(sender, "order-42")
    response = shop.post(CANCEL, {"cancellation_key": "order-42"}, format="json")
    assert response.status_code == 200
    assert response.json() == {"cancelled": 0, "already_sent": []}
    assert Delivery.objects.get(id=mine).status == "queued"


def test_an_unknown_key_is_a_200_with_nothing_cancelled(db, sender):
    response = sender.post(CANCEL, {"cancellation_key": "never-used"}, format="json")
    assert response.status_code == 200
    assert response.json() == {"cancelled": 0, "already_sent": []}


def test_held_deliveries_are_cancelled_too(sender, alice):
    held = send(sender, "digest-1")
    Delivery.objects.filter(id=held).update(status="held")  # as a digest holds it
    response = sender.post(CANCEL, {"cancellation_key": "digest-1"}, format="json")
    assert response.json()["cancelled"] == 1
    assert Delivery.objects.get(id=held).status == "cancelled"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"cancellation_key": ""},
        {"cancellation_key": None},
        {"cancellation_key": "x" * 256},
        {"cancellation_key": "a\x00b"},
        {"cancellation_key": ["order-42"]},
        ["order-42"],
    ],
    ids=["missing", "blank", "null", "long", "nul", "list", "not-an-object"],
)
def test_a_bad_body_is_a_400_with_a_code(sender, body):
    response = sender.post(CANCEL, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "validation_error"


def test_cancel_needs_the_send_scope(make_service_token, alice):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_service_token('reports', scopes=('analytics:read',))}"
    )
    response = client.post(CANCEL, {"cancellation_key": "order-42"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "scope_missing"
    assert APIClient().post(CANCEL, {"cancellation_key": "k"}, format="json").status_code == 401


def test_a_request_cancel_uses_the_same_cancel(sender, alice):
    """``DELETE /notifications/requests/{id}`` cancels held ones too, with the same reason."""
    delivery_id = send(sender, "")
    request_id = NotificationRequest.objects.get(notifications__deliveries__id=delivery_id).id
    Delivery.objects.filter(id=delivery_id).update(status="held")
    assert sender.delete(f"/api/v1/notifications/requests/{request_id}").status_code in (200, 204)
    d = Delivery.objects.get(id=delivery_id)
    assert (d.status, d.reason) == ("cancelled", "cancelled by caller")


def test_a_bulk_send_escalates_and_cancels_by_its_key(sender, alice, bob):
    from notifications.services import bulk  # noqa: PLC0415  (the fan-out, run here)

    response = sender.post(
        "/api/v1/notifications/bulk",
        {
            "recipients": [{"user_id": "alice"}, {"user_id": "bob"}],
            "content": {"title": "Sale", "subject": "Sale", "body": "Today only."},
            "escalation": [{"channel": "in_app"}, {"channel": "email", "after": "2h"}],
            "cancellation_key": "sale-1",
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    bulk.bulk_fan_out(response.json()["batch_id"])
    emails = Delivery.objects.filter(channel="email", notification__request__bulk=True)
    assert sorted((d.status, d.escalation_step) for d in emails) == [("scheduled", 1)] * 2

    cancelled = sender.post(CANCEL, {"cancellation_key": "sale-1"}, format="json").json()
    # The in-app items are in the inboxes already: reported as sent.
    assert cancelled["cancelled"] == 2 and len(cancelled["already_sent"]) == 2
    assert set(emails.values_list("status", flat=True)) == {"cancelled"}


def test_a_bulk_send_refuses_escalation_beside_channels(sender, alice):
    response = sender.post(
        "/api/v1/notifications/bulk",
        {
            "recipients": [{"user_id": "alice"}],
            "content": {"body": "x"},
            "channels": ["email"],
            "escalation": [{"channel": "in_app"}],
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "escalation_conflict"
