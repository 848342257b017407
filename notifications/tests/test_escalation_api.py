"""Escalation at the API: what a send with ``escalation`` writes, what it refuses, and the reads
(inbox, push opened) that cancel its pending steps in the read's own transaction."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from analytics.models import Event
from notifications import services
from notifications.models import Delivery, Device

ESCALATION = [
    {"channel": "in_app"},
    {"channel": "push", "after": "10m"},
    {"channel": "email", "after": "PT1H"},
]


@pytest.fixture(autouse=True)
def _nothing_consumes(settings):
    settings.CELERY_QUEUE_PREFIX = "void-"  # what is enqueued waits: no worker here


@pytest.fixture
def device(alice):
    return Device.objects.create(user=alice, platform="android", token="fcm-token-alice")


def send(sender, **body):
    payload = {
        "recipients": [{"user_id": "alice"}],
        "category": "alerts",
        "content": {"title": "Disk", "subject": "Disk", "body": "Almost full."},
        "escalation": ESCALATION,
        **body,
    }
    if payload["escalation"] is None:
        del payload["escalation"]
    return sender.post("/api/v1/notifications", payload, format="json")


def steps(notification_id) -> dict[str, Delivery]:
    return {d.channel: d for d in Delivery.objects.filter(notification_id=notification_id)}


def test_each_later_step_is_scheduled_after_the_send(sender, alice, device):
    before = timezone.now()
    response = send(sender)
    after = timezone.now()

    assert response.status_code == 202, response.content
    note = response.json()["notifications"][0]
    by_channel = {d["channel"]: d for d in note["deliveries"]}
    assert by_channel["in_app"]["status"] == "delivered"
    assert by_channel["push"]["status"] == "scheduled"
    assert by_channel["email"]["status"] == "scheduled"
    rows = steps(note["id"])
    assert {c: d.escalation_step for c, d in rows.items()} == {"in_app": 0, "push": 1, "email": 2}
    assert before + dt.timedelta(minutes=10) <= rows["push"].scheduled_for
    assert rows["push"].scheduled_for <= after + dt.timedelta(minutes=10)
    assert before + dt.timedelta(hours=1) <= rows["email"].scheduled_for
    assert rows["email"].scheduled_for <= after + dt.timedelta(hours=1)


def test_a_step_the_user_turned_off_is_skipped_by_the_usual_rules(sender, alice):
    """No push device: the push step is skipped as any push would be; the email still waits."""
    note = send(sender).json()["notifications"][0]
    rows = steps(note["id"])
    assert (rows["push"].status, rows["push"].reason) == ("skipped", "no push device registered")
    assert rows["email"].status == "scheduled"


@pytest.mark.parametrize(
    ("escalation", "extra", "code"),
    [
        ([{"channel": "fax"}], {}, "invalid_escalation"),
        ([{"channel": "in_app"}, {"channel": "in_app", "after": "1m"}], {}, "invalid_escalation"),
        ([{"channel": "in_app", "after": "5m"}], {}, "invalid_escalation"),
        (
            [{"channel": "in_app"}, {"channel": "push", "after": "1h"}, {"channel": "email"}],
            {},
            "invalid_escalation",
        ),
        (
            [
                {"channel": "in_app"},
                {"channel": "push", "after": "1h"},
                {"channel": "email", "after": "30m"},
            ],
            {},
            "invalid_escalation",
        ),
        ([{"channel": "in_app"}, {"channel": "email", "after": "soon"}], {}, "invalid_escalation"),
        ([{"channel": "in_app"}, {"channel": "email", "after": "-PT1M"}], {}, "invalid_escalation"),
        ([{"channel": "in_app"}, {"channel": "email", "after": "400d"}], {}, "invalid_escalation"),
        # Refused at the edge, as a NUL anywhere in a body is.
        (
            [{"channel": "in_app"}, {"channel": "email", "after": "1m\x00"}],
            {},
            "validation_error",
        ),
        ([{"channel": "in_app"}, {"channel": "email", "after": True}], {}, "invalid_escalation"),
        ([{"channel": "in_app", "when": "now"}], {}, "invalid_escalation"),
        ({"channel": "in_app"}, {}, "invalid_escalation"),
        ([], {}, "invalid_escalation"),
        ([{"channel": "in_app"}], {"channels": ["email"]}, "escalation_conflict"),
        (
            [{"channel": "in_app"}],
            {"scheduled_at": "2099-01-01T00:00:00Z"},
            "escalation_conflict",
        ),
    ],
)
def test_a_bad_escalation_is_a_400_with_its_code(sender, alice, escalation, extra, code):
    response = send(sender, escalation=escalation, **extra)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert not Delivery.objects.exists()


@pytest.mark.parametrize(
    "key", ["x" * 256, "a\x00b", ["list"], {"k": 1}], ids=["long", "nul", "list", "object"]
)
def test_a_bad_cancellation_key_on_a_send_is_a_400(sender, alice, key):
    response = send(sender, escalation=[{"channel": "in_app"}], cancellation_key=key)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "validation_error"
    assert "cancellation_key" in response.json()["fields"]


def test_reading_in_the_inbox_cancels_the_pending_steps(
    sender, alice, device, as_user, django_assert_num_queries
):
    note = send(sender).json()["notifications"][0]
    client = as_user(alice)
    client.get("/api/v1/notifications/unread")  # the user row, warmed as any client's

    # The user, the notification, its read mark, the cancel (one statement), the cancelled
    # events, the unread count, the realtime event (one statement), and the transaction's
    # savepoint and release (inside the test's own transaction).
    with django_assert_num_queries(9):
        response = client.post(f"/api/v1/notifications/{note['id']}/read")

    assert response.status_code == 200
    rows = steps(note["id"])
    assert rows["in_app"].status == "delivered"
    for channel in ("push", "email"):
        assert rows[channel].status == "cancelled"
        assert rows[channel].reason == "read in inbox"
        assert rows[channel].cancelled_at is not None
    cancelled = Event.objects.filter(type="cancelled", notification_id=note["id"])
    assert sorted(e.channel for e in cancelled) == ["email", "push"]
    assert {e.data["reason"] for e in cancelled} == {"read in inbox"}


def test_reading_a_notification_without_escalation_costs_no_more(
    sender, alice, as_user, django_assert_num_queries
):
    note = send(sender, escalation=None, channels=["in_app"]).json()["notifications"][0]
    client = as_user(alice)
    client.get("/api/v1/notifications/unread")
    # As above without the events: the cancel statement finds nothing.
    with django_assert_num_queries(8):
        client.post(f"/api/v1/notifications/{note['id']}/read")


def test_read_all_and_dismiss_cancel_the_pending_steps(sender, alice, device, as_user):
    first = send(sender).json()["notifications"][0]
    second = send(sender).json()["notifications"][0]
    client = as_user(alice)

    assert client.post("/api/v1/notifications/read-all").json() == {"marked": 2}
    for note in (first, second):
        rows = steps(note["id"])
        assert {rows["push"].status, rows["email"].status} == {"cancelled"}

    third = send(sender).json()["notifications"][0]
    assert client.delete(f"/api/v1/notifications/{third['id']}").status_code == 204
    rows = steps(third["id"])
    assert (rows["email"].status, rows["email"].reason) == ("cancelled", "read in inbox")


def test_marking_unread_again_does_not_bring_cancelled_steps_back(sender, alice, device, as_user):
    note = send(sender).json()["notifications"][0]
    client = as_user(alice)
    client.post(f"/api/v1/notifications/{note['id']}/read")
    client.post(f"/api/v1/notifications/{note['id']}/unread")
    assert steps(note["id"])["email"].status == "cancelled"


def test_a_push_opened_cancels_the_later_steps(sender, alice, bob, device, as_user):
    escalation = [{"channel": "push"}, {"channel": "email", "after": "30m"}]
    note = send(sender, escalation=escalation).json()["notifications"][0]

    # Only the notification's own user can say they opened it.
    assert as_user(bob).post(f"/api/v1/notifications/{note['id']}/push-opened").status_code == 404
    assert steps(note["id"])["email"].status == "scheduled"

    response = as_user(alice).post(f"/api/v1/notifications/{note['id']}/push-opened")
    assert response.status_code == 200
    assert response.json() == {"cancelled": 1}
    rows = steps(note["id"])
    assert (rows["email"].status, rows["email"].reason) == ("cancelled", "push opened")
    # The first step is the one that was opened: it is left as it is.
    assert rows["push"].status == "queued"
    # Opening it again cancels nothing more.
    again = as_user(alice).post(f"/api/v1/notifications/{note['id']}/push-opened")
    assert again.json() == {"cancelled": 0}


def test_a_push_opened_for_an_unknown_notification_is_a_404(alice, as_user):
    response = as_user(alice).post(
        "/api/v1/notifications/01890000-0000-7000-8000-000000000000/push-opened"
    )
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_step_released_to_the_queue_is_still_cancelled_by_a_read(sender, alice, as_user):
    """The sweep released the step (queued, not yet claimed) when the user reads: the read
    cancels it, and no worker can claim it afterwards."""
    from conftest import wait_for  # noqa: PLC0415

    escalation = [{"channel": "in_app"}, {"channel": "email", "after": "1s"}]
    note = send(sender, escalation=escalation).json()["notifications"][0]
    email = steps(note["id"])["email"]
    wait_for(lambda: timezone.now() > email.scheduled_for, 10, what="the step's time")
    assert services.deliveries_sweep()["released"] == 1
    assert steps(note["id"])["email"].status == "queued"

    as_user(alice).post(f"/api/v1/notifications/{note['id']}/read")

    email = steps(note["id"])["email"]
    assert (email.status, email.reason) == ("cancelled", "read in inbox")
    assert services.delivery_attempt(email.id) == "not_claimed"
