"""POST /api/v1/notifications: resolution rules, validation, idempotency, request management."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
import zoneinfo

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.models import Event
from communication.models import Category, User
from notifications import services
from notifications.models import (
    Consent,
    Delivery,
    IdempotencyKey,
    Notification,
    NotificationPreference,
    NotificationRequest,
    OutboxMessage,
    QuietHours,
    Suppression,
)

pytestmark = pytest.mark.django_db

INLINE = {
    "subject": "Disk almost full",
    "title": "Disk almost full",
    "body": "Volume {{ volume }} is at {{ pct }}%.",
    "html": "<p>Volume {{ volume }}</p>",
}


def send(client, **body):
    body.setdefault("content", INLINE)
    body.setdefault("data", {"volume": "/data", "pct": 91})
    headers = {}
    if "idempotency_key" in body:
        headers["HTTP_IDEMPOTENCY_KEY"] = body.pop("idempotency_key")
    return client.post("/api/v1/notifications", body, format="json", **headers)


def deliveries_of(response) -> dict:
    (notification,) = response.json()["notifications"]
    return {d["channel"]: d for d in notification["deliveries"]}


def test_send_to_a_user_on_three_channels(sender, alice):
    response = send(
        sender,
        recipients=[{"user_id": "alice"}],
        category="alerts",
        channels=["email", "sms", "in_app"],
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "accepted"
    by_channel = deliveries_of(response)
    assert by_channel["email"]["status"] == "queued"
    assert by_channel["sms"]["status"] == "queued"
    assert by_channel["in_app"]["status"] == "delivered"
    notification = Notification.objects.get(id=body["notifications"][0]["id"])
    assert notification.user == alice
    assert notification.body == "Volume /data is at 91%."
    assert Delivery.objects.get(id=by_channel["email"]["id"]).address == "alice@example.com"
    assert Event.objects.filter(notification_id=notification.id).count() == 3


def test_raw_addresses_and_default_category(sender):
    response = send(
        sender, recipients=[{"email": "Ops@Example.com"}, {"phone": "+33 6 12 34 56 78"}]
    )
    assert response.status_code == 202, response.content
    request = NotificationRequest.objects.get(id=response.json()["request_id"])
    assert request.category_id == "transactional"
    addresses = set(
        Delivery.objects.filter(notification__request=request).values_list("channel", "address")
    )
    assert addresses == {("email", "ops@example.com"), ("sms", "+33612345678")}


def test_missing_contact_detail_skips_that_channel_only(sender, bob):
    response = send(
        sender, recipients=[{"user_id": "bob"}], category="alerts", channels=["email", "sms"]
    )
    by_channel = deliveries_of(response)
    assert by_channel["email"]["status"] == "queued"
    assert by_channel["sms"]["status"] == "skipped"
    assert "phone number" in by_channel["sms"]["reason"]


def test_opt_out_is_respected_except_for_mandatory_categories(sender, alice):
    for key in ("alerts", "security"):
        NotificationPreference.objects.create(
            user=alice, category_id=key, channel="email", enabled=False
        )
    alerts = deliveries_of(
        send(sender, recipients=[{"user_id": "alice"}], category="alerts", channels=["email"])
    )
    assert alerts["email"]["status"] == "skipped"
    assert "opted out" in alerts["email"]["reason"]
    security = deliveries_of(
        send(sender, recipients=[{"user_id": "alice"}], category="security", channels=["email"])
    )
    assert security["email"]["status"] == "queued"


def test_auto_channels_follow_category_defaults_and_preferences(sender, alice):
    NotificationPreference.objects.create(
        user=alice, category_id="alerts", channel="sms", enabled=False
    )
    response = send(sender, recipients=[{"user_id": "alice"}], category="alerts", channels="auto")
    channels = {c: d["status"] for c, d in deliveries_of(response).items()}
    assert "sms" not in channels
    assert channels["email"] == "queued" and channels["in_app"] == "delivered"


def test_consent_required_for_marketing(sender, alice):
    first = deliveries_of(
        send(sender, recipients=[{"user_id": "alice"}], category="marketing", channels=["email"])
    )
    assert first["email"]["status"] == "skipped"
    assert "consent" in first["email"]["reason"]
    Consent.objects.create(
        user=alice, channel="email", category_id="marketing", granted=True, source="signup-form"
    )
    second = deliveries_of(
        send(sender, recipients=[{"user_id": "alice"}], category="marketing", channels=["email"])
    )
    assert second["email"]["status"] == "queued"
    Consent.objects.create(user=alice, channel="", category=None, granted=False, source="support")
    third = deliveries_of(
        send(sender, recipients=[{"user_id": "alice"}], category="marketing", channels=["email"])
    )
    assert third["email"]["status"] == "skipped"


def test_a_category_changed_by_staff_applies_to_the_next_send(
    sender, alice, django_assert_max_num_queries
):
    """The send path keeps categories in a per-process cache: a change saved in this process
    applies at once, and a send with a cached category does not read it again."""
    first = deliveries_of(
        send(sender, recipients=[{"user_id": "alice"}], category="alerts", channels=["email"])
    )
    assert first["email"]["status"] == "queued"
    with django_assert_max_num_queries(20) as cached:
        send(sender, recipients=[{"user_id": "alice"}], category="alerts", channels=["email"])
    assert not [q for q in cached.captured_queries if "communication_category" in q["sql"]]

    alerts = Category.objects.get(key="alerts")
    alerts.requires_consent = True
    alerts.save()
    second = deliveries_of(
        send(sender, recipients=[{"user_id": "alice"}], category="alerts", channels=["email"])
    )
    assert second["email"]["status"] == "skipped"
    assert second["email"]["reason"] == "no consent for alerts on email"


def test_suppressed_address_is_not_sent(sender, alice):
    Suppression.objects.create(channel="email", address="alice@example.com", reason="hard_bounce")
    by_channel = deliveries_of(
        send(
            sender,
            recipients=[{"user_id": "alice"}],
            category="alerts",
            channels=["email", "in_app"],
        )
    )
    assert by_channel["email"]["status"] == "suppressed"
    assert by_channel["email"]["reason"] == "hard_bounce"
    assert by_channel["in_app"]["status"] == "delivered"


def test_quiet_hours_delay_non_urgent_sends_to_the_end_of_the_window(sender, alice):
    # A window from an hour ago to two hours ahead in Paris (crossing midnight when it must): now
    # is inside it whenever the test runs.
    paris = __import__("zoneinfo").ZoneInfo("Europe/Paris")
    paris_now = timezone.now().astimezone(paris)
    start = (paris_now - dt.timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (paris_now + dt.timedelta(hours=2)).time().replace(second=0, microsecond=0)
    QuietHours.objects.create(user=alice, start=start, end=end)
    normal = deliveries_of(
        send(
            sender,
            recipients=[{"user_id": "alice"}],
            category="alerts",
            channels=["email", "in_app"],
        )
    )
    assert normal["email"]["status"] == "held"  # released with the others as one digest
    assert normal["in_app"]["status"] == "delivered"
    when = dt.datetime.fromisoformat(normal["email"]["scheduled_for"])
    local = when.astimezone(paris)
    assert (local.hour, local.minute) == (end.hour, end.minute)
    assert paris_now < when <= paris_now + dt.timedelta(hours=2)
    urgent = deliveries_of(
        send(
            sender,
            recipients=[{"user_id": "alice"}],
            category="alerts",
            channels=["email"],
            priority="urgent",
        )
    )
    assert urgent["email"]["status"] == "queued"


def test_schedule_in_the_recipients_local_time(sender, alice, bob):
    tomorrow = (timezone.now() + dt.timedelta(days=1)).date()
    response = sender.post(
        "/api/v1/notifications/schedule",
        {
            "recipients": [{"user_id": "alice"}, {"user_id": "bob"}],
            "category": "reminders",
            "channels": ["email"],
            "content": INLINE,
            "data": {"volume": "v", "pct": 1},
            "scheduled_at": f"{tomorrow}T09:00:00",
            "scheduled_local": True,
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    times = {}
    for item in response.json()["notifications"]:
        (delivery,) = item["deliveries"]
        assert delivery["status"] == "scheduled"
        times[item["recipient"]["user_id"]] = dt.datetime.fromisoformat(delivery["scheduled_for"])

    assert times["alice"].astimezone(zoneinfo.ZoneInfo("Europe/Paris")).hour == 9
    assert times["bob"].astimezone(zoneinfo.ZoneInfo("America/New_York")).hour == 9


def test_schedule_needs_a_future_time(sender, alice):
    response = sender.post(
        "/api/v1/notifications/schedule/",
        {
            "recipients": [{"user_id": "alice"}],
            "content": INLINE,
            "scheduled_at": "2020-01-01T00:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 400
    assert "scheduled_at" in response.json()["fields"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"recipients": []}, "recipients"),
        ({"recipients": [{"phone": "12"}]}, "recipients[0].phone"),
        ({"recipients": [{"email": "not-an-email"}]}, "recipients[0].email"),
        ({"recipients": [{"email": "a@example.com", "phone": "+33612345678"}]}, "recipients[0]"),
        ({"recipients": [{"email": "a@example.com"}], "channels": ["fax"]}, "channels"),
        ({"recipients": [{"email": "a@example.com"}], "priority": "asap"}, "priority"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(sender, body, field):
    response = send(sender, **body)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert field in response.json()["fields"]
    assert NotificationRequest.objects.count() == 0


def test_unknown_template(sender, alice):
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "alice"}],
            "template": "no-such-template",
            "channels": ["email"],
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_template"


def test_unknown_user_and_category(sender):
    response = send(sender, recipients=[{"user_id": "ghost"}])
    assert response.status_code == 400 and response.json()["code"] == "unknown_user"
    response = send(sender, recipients=[{"email": "a@example.com"}], category="nope")
    assert response.status_code == 400 and response.json()["code"] == "unknown_category"


def test_more_than_a_thousand_recipients_is_413(sender):
    recipients = [{"email": f"u{i}@example.com"} for i in range(1001)]
    response = send(sender, recipients=recipients)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_a_thousand_recipients_in_bounded_queries(sender, django_assert_max_num_queries):
    recipients = [{"email": f"u{i}@example.com"} for i in range(1000)]
    with django_assert_max_num_queries(40):
        response = send(sender, recipients=recipients, category="alerts", channels=["email"])
    assert response.status_code == 202
    assert Delivery.objects.filter(status="queued").count() == 1000


def test_scope_is_required(make_service_token, alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('x', ['users:read'])}")
    response = send(client, recipients=[{"user_id": "alice"}])
    assert response.status_code == 403 and response.json()["code"] == "scope_missing"


# ---------------------------------------------------------------------------- idempotency


def test_replay_returns_the_stored_answer(sender, alice):
    first = send(sender, recipients=[{"user_id": "alice"}], idempotency_key="k-1")
    again = send(sender, recipients=[{"user_id": "alice"}], idempotency_key="k-1")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replay"] == "true"
    assert "Idempotent-Replay" not in first
    assert NotificationRequest.objects.count() == 1


def test_same_key_other_body_is_422(sender, alice):
    send(sender, recipients=[{"user_id": "alice"}], idempotency_key="k-2")
    other = send(sender, recipients=[{"user_id": "alice"}], priority="high", idempotency_key="k-2")
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_mismatch"


def test_keys_are_per_caller(sender, alice, make_service_token):
    send(sender, recipients=[{"user_id": "alice"}], idempotency_key="shared")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('crm')}")
    assert (
        send(other, recipients=[{"user_id": "alice"}], idempotency_key="shared").status_code == 202
    )
    assert NotificationRequest.objects.count() == 2


def test_failed_request_releases_its_key(sender, alice):
    bad = send(sender, recipients=[{"user_id": "ghost"}], idempotency_key="k-3")
    assert bad.status_code == 400
    assert not IdempotencyKey.objects.filter(key="k-3").exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_requests_with_one_key_make_one_notification(make_service_token):
    User.objects.create(username="carl", external_id="carl", email="carl@example.com")
    token = make_service_token("billing")
    results = []
    barrier = threading.Barrier(8)

    def worker():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        barrier.wait()
        results.append(send(client, recipients=[{"user_id": "carl"}], idempotency_key="race"))

        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {202, 409}, codes
    assert NotificationRequest.objects.count() == 1
    assert Notification.objects.count() == 1
    ids = {r.json()["request_id"] for r in results if r.status_code == 202}
    assert len(ids) == 1
    conflicts = [r for r in results if r.status_code == 409]
    assert all(r.json()["code"] == "idempotency_in_progress" for r in conflicts)


# ----------------------------------------------------------------------- request management


def test_request_status_cancel_and_reschedule(sender, alice):
    later = (timezone.now() + dt.timedelta(hours=2)).isoformat()
    created = sender.post(
        "/api/v1/notifications/schedule",
        {
            "recipients": [{"user_id": "alice"}],
            "category": "alerts",
            "channels": ["email", "sms"],
            "content": INLINE,
            "data": {"volume": "v", "pct": 1},
            "scheduled_at": later,
        },
        format="json",
    ).json()
    url = f"/api/v1/notifications/requests/{created['request_id']}"
    assert sender.get(url).json() == created

    new_time = timezone.now() + dt.timedelta(hours=5)
    moved = sender.patch(url, {"scheduled_at": new_time.isoformat()}, format="json")
    assert moved.status_code == 200
    for d in moved.json()["notifications"][0]["deliveries"]:
        assert abs(dt.datetime.fromisoformat(d["scheduled_for"]) - new_time) < dt.timedelta(
            seconds=1
        )

    cancelled = sender.delete(url + "/")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert {d["status"] for d in cancelled.json()["notifications"][0]["deliveries"]} == {
        "cancelled"
    }
    assert (
        sender.patch(url, {"scheduled_at": new_time.isoformat()}, format="json").status_code == 409
    )


def test_another_callers_request_is_404(sender, alice, make_service_token):
    created = send(sender, recipients=[{"user_id": "alice"}]).json()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('crm')}")
    url = f"/api/v1/notifications/requests/{created['request_id']}"
    assert other.get(url).status_code == 404
    assert other.delete(url).status_code == 404


def test_request_list_is_the_callers_own_in_bounded_queries(
    sender, alice, django_assert_max_num_queries
):
    for _ in range(5):
        send(sender, recipients=[{"user_id": "alice"}, {"email": "x@example.com"}])
    with django_assert_max_num_queries(6):
        response = sender.get("/api/v1/notifications/requests?limit=3")
    assert response.status_code == 200
    body = response.json()
    assert len(body["results"]) == 3 and body["next"]
    assert body["results"][0]["recipients"] == 2
    rest = sender.get(body["next"]).json()
    assert len(rest["results"]) == 2


# ------------------------------------------------------------------------------- templates


def test_a_template_family_speaks_on_every_channel_in_the_recipients_language(sender, alice):
    alice.name = "Alice"
    alice.save()
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "alice"}],
            "category": "system",
            "template": "system-alert",
            "channels": ["email", "sms", "in_app"],
            "data": {
                "title": "Maintenance",
                "message": "Coupure de 30 minutes.",
                "severity": "warning",
                "occurred_at": "2026-03-01T09:30:00Z",
                "action_url": "https://example.com/status",
            },
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    by_channel = deliveries_of(response)
    assert {c: d["status"] for c, d in by_channel.items()} == {
        "email": "queued",
        "sms": "queued",
        "in_app": "delivered",
    }
    notification = Notification.objects.get(id=response.json()["notifications"][0]["id"])
    assert "Maintenance" in notification.title
    assert "Coupure" in notification.body
    assert notification.action_url == "https://example.com/status"

    services.delivery_attempt(by_channel["email"]["id"])

    email = OutboxMessage.objects.get(channel="email")
    assert "Maintenance" in email.subject
    assert "Bonjour Alice" in email.html, "French (alice's locale), with her name"
    delivery = Delivery.objects.get(id=by_channel["email"]["id"])
    assert delivery.template_version is not None


def test_missing_template_variable_is_a_400_naming_it(sender, alice):
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "alice"}],
            "category": "system",
            "template": "system-alert",
            "channels": ["email"],
            "data": {"title": "t", "severity": "info", "occurred_at": "2026-03-01T09:30:00Z"},
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "missing_variable"
    assert "message" in response.json()["detail"]
    assert NotificationRequest.objects.count() == 0


@pytest.mark.django_db
def test_requests_notifications_and_deliveries_get_time_ordered_ids(sender):
    body = {"recipients": [{"email": "a@example.com"}], "content": {"subject": "S", "body": "B"}}
    first = sender.post("/api/v1/notifications", body, format="json").json()
    time.sleep(0.002)
    second = sender.post("/api/v1/notifications", body, format="json").json()

    def ids(answer):
        notification = answer["notifications"][0]
        return [answer["request_id"], notification["id"], notification["deliveries"][0]["id"]]

    for earlier, later in zip(ids(first), ids(second), strict=True):
        assert uuid.UUID(earlier).version == 7
        assert earlier < later
