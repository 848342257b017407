"""What is in the inbox: a notification whose in-app delivery was delivered, from that moment,
and never one without an in-app delivery, one still scheduled, or one cancelled before its time.
Every way of reading the inbox agrees: the lists, one item, the unread count, read-all, the
``notification.created`` event's count and the websocket's "ready" message."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone
from websockets.sync.client import connect

from communication.auth import tokens
from communication.models import RealtimeEvent, User
from notifications import selectors, services
from notifications.models import Delivery
from notifications.tests.test_indexes import assert_indexed

pytestmark = pytest.mark.django_db


def send(sender, user, channels, title, *, schedule_in: dt.timedelta | None = None) -> dict:
    body = {
        "recipients": [{"user_id": user.external_id}],
        "category": "alerts",
        "channels": channels,
        "content": {"subject": title, "title": title, "body": "b"},
    }
    path = "/api/v1/notifications"
    if schedule_in is not None:
        body["scheduled_at"] = (timezone.now() + schedule_in).isoformat()
        path = "/api/v1/notifications/schedule"
    response = sender.post(path, body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def inbox_of(client) -> dict:
    unread = client.get("/api/v1/notifications/unread").json()
    history = client.get("/api/v1/notifications/history").json()
    return {
        "count": unread["count"],
        "unread": [r["title"] for r in unread["results"]],
        "history": [r["title"] for r in history["results"]],
    }


def time_passes(request_body: dict) -> None:
    """The scheduled deliveries of a request fall due, and the beat's sweep runs."""
    ids = [d["id"] for n in request_body["notifications"] for d in n["deliveries"]]
    Delivery.objects.filter(id__in=ids, status="scheduled").update(
        scheduled_for=timezone.now() - dt.timedelta(seconds=1)
    )
    services.deliveries_sweep()


def test_a_send_without_in_app_never_reaches_the_inbox(sender, alice, as_user):
    client = as_user(alice)
    email_only = send(sender, alice, ["email"], "By email")["notifications"][0]["id"]
    send(sender, alice, ["in_app"], "In the app")
    assert inbox_of(client) == {"count": 1, "unread": ["In the app"], "history": ["In the app"]}
    assert client.get(f"/api/v1/notifications/{email_only}").status_code == 404
    assert client.put(f"/api/v1/notifications/{email_only}/read").status_code == 404
    assert client.post("/api/v1/notifications/read-all").json() == {"marked": 1}


def test_a_scheduled_in_app_send_arrives_when_its_time_comes(sender, alice, as_user):
    client = as_user(alice)
    later = send(sender, alice, ["in_app"], "Later", schedule_in=dt.timedelta(hours=1))
    later_id = later["notifications"][0]["id"]
    assert inbox_of(client) == {"count": 0, "unread": [], "history": []}
    assert client.get(f"/api/v1/notifications/{later_id}").status_code == 404

    send(sender, alice, ["in_app"], "Now")
    time_passes(later)
    # It arrived after "Now": it comes first, though it was created before.
    assert inbox_of(client) == {
        "count": 2,
        "unread": ["Later", "Now"],
        "history": ["Later", "Now"],
    }
    assert client.get(f"/api/v1/notifications/{later_id}").json()["title"] == "Later"


def test_a_cancelled_scheduled_send_never_arrives(sender, alice, as_user):
    client = as_user(alice)
    later = send(sender, alice, ["in_app", "email"], "Cancelled", schedule_in=dt.timedelta(hours=1))
    cancelled = sender.delete(f"/api/v1/notifications/requests/{later['request_id']}")
    assert cancelled.status_code == 200, cancelled.content
    time_passes(later)
    assert inbox_of(client) == {"count": 0, "unread": [], "history": []}
    assert client.post("/api/v1/notifications/read-all").json() == {"marked": 0}


def test_the_created_events_count_only_inbox_items(sender, alice):
    send(sender, alice, ["email"], "By email")
    send(sender, alice, ["in_app"], "Soon", schedule_in=dt.timedelta(hours=1))
    send(sender, alice, ["in_app", "email"], "First")
    events = RealtimeEvent.objects.filter(user=alice, type="notification.created")
    assert [(e.payload["title"], e.payload["unread"]) for e in events.order_by("seq")] == [
        ("First", 1)
    ]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_websocket_ready_count_is_the_inbox_count(live_asgi, sender):
    user = User.objects.create(username="wsinbox", external_id="wsinbox")
    send(sender, user, ["push"], "Push only")
    send(sender, user, ["in_app"], "Soon", schedule_in=dt.timedelta(hours=1))
    send(sender, user, ["in_app"], "Here")
    token = tokens.issue_user_token(user)
    with connect(f"{live_asgi.ws_url}/ws/v1/?token={token}") as ws:
        ready = json.loads(ws.recv(timeout=5))
    assert ready["type"] == "ready" and ready["unread"] == 1


def test_every_inbox_read_uses_a_partial_index_of_the_inbox(alice):
    assert_indexed(selectors.inbox(alice)[:50], "notification_user_inbox")
    assert_indexed(selectors.inbox(alice, unread_only=True)[:50], "notification_user_unread")
    assert_indexed(selectors.inbox_unread(alice), "notification_user_unread")
