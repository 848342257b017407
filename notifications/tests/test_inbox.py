"""The user-facing API: unread, read state, history, categories, preferences, consent."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from communication.compliance.keyed import lookup_hash
from notifications import services, unsubscribe
from notifications.models import (
    Consent,
    Delivery,
    Notification,
    NotificationPreference,
    QuietHours,
    Suppression,
    suppression_hash,
)

pytestmark = pytest.mark.django_db


def notify(user, n=1, category="alerts", title="Hello"):
    ids = []
    for i in range(n):
        outcome = services.notification_send(
            caller="svc",
            payload={
                "recipients": [{"user_id": user.external_id}],
                "category": category,
                "channels": ["in_app"],
                "content": {"title": f"{title} {i}", "body": "b"},
                "data": {},
            },
        )
        ids.append(outcome.body["notifications"][0]["id"])
    return ids


def test_unread_count_and_most_recent_first(alice, as_user, django_assert_max_num_queries):
    ids = notify(alice, 3)
    client = as_user(alice)
    with django_assert_max_num_queries(4):
        body = client.get("/api/v1/notifications/unread").json()
    assert body["count"] == 3
    assert [r["id"] for r in body["results"]] == ids[::-1]
    assert body["results"][0]["title"] == "Hello 2"


def test_read_unread_read_all_and_dismiss(alice, as_user):
    ids = notify(alice, 3)
    client = as_user(alice)
    assert client.put(f"/api/v1/notifications/{ids[0]}/read").json()["read"] is True
    assert client.get("/api/v1/notifications/unread").json()["count"] == 2
    assert client.put(f"/api/v1/notifications/{ids[0]}/unread/").json()["read"] is False
    assert client.post("/api/v1/notifications/read-all").json() == {"marked": 3}
    assert client.get("/api/v1/notifications/unread").json()["count"] == 0
    assert client.delete(f"/api/v1/notifications/{ids[1]}").status_code == 204
    assert client.get(f"/api/v1/notifications/{ids[1]}").status_code == 404
    assert client.get(f"/api/v1/notifications/{ids[2]}").json()["read"] is True


def test_someone_elses_notification_is_404(alice, bob, as_user):
    (nid,) = notify(alice)
    client = as_user(bob)
    assert client.get(f"/api/v1/notifications/{nid}").status_code == 404
    assert client.put(f"/api/v1/notifications/{nid}/read").status_code == 404
    assert client.delete(f"/api/v1/notifications/{nid}").status_code == 404
    assert Notification.objects.get(id=nid).read_at is None


def test_service_tokens_cannot_read_inboxes(alice, sender):
    assert sender.get("/api/v1/notifications/unread").status_code == 403


def test_history_cursor_pagination_and_filters(alice, as_user, django_assert_max_num_queries):
    notify(alice, 5, category="alerts")
    notify(alice, 2, category="reminders")
    client = as_user(alice)
    with django_assert_max_num_queries(4):
        page = client.get("/api/v1/notifications/history?limit=4").json()
    assert len(page["results"]) == 4 and page["next"]
    rest = client.get(page["next"]).json()
    assert len(rest["results"]) == 3 and rest["next"] is None
    only = client.get("/api/v1/notifications/history?category=reminders").json()
    assert {r["category"] for r in only["results"]} == {"reminders"}


def test_categories_show_the_users_choice_per_channel(alice, as_user):
    NotificationPreference.objects.create(
        user=alice, category_id="alerts", channel="email", enabled=False
    )
    body = {c["key"]: c for c in as_user(alice).get("/api/v1/notifications/categories").json()}
    assert body["alerts"]["channels"]["email"] is False
    assert body["alerts"]["channels"]["in_app"] is True
    assert body["security"]["mandatory"] is True
    assert all(body["security"]["channels"].values())


def test_preferences_and_quiet_hours(alice, as_user):
    client = as_user(alice)
    response = client.put(
        "/api/v1/notifications/preferences",
        {
            "preferences": [{"category": "activity", "channel": "push", "enabled": False}],
            "quiet_hours": {"start": "22:00", "end": "07:00"},
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    activity = next(c for c in body["categories"] if c["key"] == "activity")
    assert activity["channels"]["push"] is False
    assert body["quiet_hours"]["start"] == "22:00:00"
    assert QuietHours.objects.get(user=alice).end.hour == 7
    refused = client.put(
        "/api/v1/notifications/preferences",
        {
            "preferences": [{"category": "security", "channel": "email", "enabled": False}],
        },
        format="json",
    )
    assert refused.status_code == 400
    assert "preferences[0].enabled" in refused.json()["fields"]
    assert not NotificationPreference.objects.filter(category_id="security").exists()
    cleared = client.put("/api/v1/notifications/preferences", {"quiet_hours": None}, format="json")
    assert cleared.json()["quiet_hours"] is None


def test_consents_are_recorded_with_their_source(alice, as_user):
    client = as_user(alice)
    response = client.post(
        "/api/v1/notifications/consents",
        {
            "channel": "email",
            "category": "marketing",
            "granted": True,
            "source": "settings-page",
        },
        format="json",
        HTTP_USER_AGENT="pytest",
    )
    assert response.status_code == 201, response.content
    consent = Consent.objects.get(user=alice)
    assert consent.granted and consent.evidence["user_agent"] == "pytest"
    client.post(
        "/api/v1/notifications/consents",
        {"category": "marketing", "granted": False, "source": "unsubscribe"},
        format="json",
    )
    listed = client.get("/api/v1/notifications/consents").json()
    assert [c["granted"] for c in listed] == [False, True]
    bad = client.post(
        "/api/v1/notifications/consents",
        {"category": "nope", "granted": True, "source": "x"},
        format="json",
    )
    assert bad.status_code == 400


def test_outbox_is_for_staff(alice, as_user, make_user_token):
    assert as_user(alice).get("/api/v1/outbox").status_code == 403
    staff = APIClient()
    staff.credentials(HTTP_AUTHORIZATION=f"Bearer {make_user_token('op', staff=True)}")
    assert staff.get("/api/v1/outbox").status_code == 200


def test_unsubscribe_link_turns_the_category_off(alice, client):
    outcome = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"user_id": "alice"}, {"email": "raw@example.com"}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "s", "body": "b"},
            "data": {},
        },
    )
    deliveries = Delivery.objects.filter(notification__request_id=outcome.body["request_id"])
    mine = deliveries.get(address_hash=lookup_hash("alice@example.com"))
    headers = unsubscribe.headers_for(mine)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = headers["List-Unsubscribe"].strip("<>").split("://", 1)[1].split("/", 1)[1]
    page = client.get(f"/{path}")
    assert page.status_code == 200 and b"Unsubscribe" in page.content
    assert client.post(f"/{path}", {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert not NotificationPreference.objects.get(
        user=alice, category_id="alerts", channel="email"
    ).enabled
    raw = deliveries.get(address_hash=lookup_hash("raw@example.com"))
    raw_path = unsubscribe.url_for(raw).split("://", 1)[1].split("/", 1)[1]
    client.post(f"/{raw_path}")

    assert Suppression.objects.filter(
        address_hash=suppression_hash("raw@example.com"), reason="unsubscribe"
    ).exists()
    assert client.get(f"/{path}x").status_code == 400


def test_no_unsubscribe_header_on_mandatory_categories(alice):
    outcome = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"user_id": "alice"}],
            "category": "security",
            "channels": ["email"],
            "content": {"subject": "s", "body": "b"},
            "data": {},
        },
    )
    delivery = Delivery.objects.get(notification__request_id=outcome.body["request_id"])
    assert unsubscribe.headers_for(delivery) == {}
