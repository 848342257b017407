"""The websocket gateway against a real uvicorn process: live events, sequence, resume."""

from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from communication.auth import tokens
from communication.models import RealtimeEvent, User
from notifications import services

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def recv(ws, timeout=5):
    return json.loads(ws.recv(timeout=timeout))


def send_in_app(sender, user_id, title):
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": user_id}],
            "category": "alerts",
            "channels": ["in_app"],
            "content": {"title": title, "body": "body"},
        },
        format="json",
    )
    assert response.status_code == 202
    return response.json()["notifications"][0]["id"]


def test_notification_created_arrives_within_a_second_and_missed_ones_replay(live_asgi, sender):
    user = User.objects.create(username="rt", external_id="rt", email="rt@example.com")
    token = tokens.issue_user_token(user)
    with connect(f"{live_asgi.ws_url}/ws/v1/?token={token}") as ws:
        ready = recv(ws)
        assert ready == {"type": "ready", "user_id": "rt", "seq": 0, "unread": 0}
        started = time.monotonic()
        nid = send_in_app(sender, "rt", "First")
        event = recv(ws)
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"notification.created took {elapsed:.3f}s"
        assert event["type"] == "notification.created" and event["seq"] == 1
        assert event["data"]["id"] == nid and event["data"]["title"] == "First"
        assert event["data"]["unread"] == 1

    # Offline: two more notifications and a read.
    second = send_in_app(sender, "rt", "Second")
    send_in_app(sender, "rt", "Third")

    services.notification_mark(user=user, notification_id=second, read=True)

    with connect(f"{live_asgi.ws_url}/ws/v1/?token={token}") as ws:
        ready = recv(ws)
        assert ready["seq"] == 4 and ready["unread"] == 2
        ws.send(json.dumps({"type": "resume", "after_seq": 1}))
        missed = [recv(ws) for _ in range(3)]
        assert [(e["seq"], e["type"]) for e in missed] == [
            (2, "notification.created"),
            (3, "notification.created"),
            (4, "notification.read"),
        ]
        assert missed[1]["data"]["title"] == "Third"
        ws.send(json.dumps({"type": "resume", "after_seq": 4}))
        ws.send(json.dumps({"type": "ping", "id": 1}))
        assert recv(ws) == {"type": "pong", "id": 1}, "nothing to replay after the latest seq"
        # Past the latest: this client saw events the database lost (a crash, a restore).
        ws.send(json.dumps({"type": "resume", "after_seq": 9}))
        assert recv(ws) == {"type": "resync_required"}
        ws.send(json.dumps({"type": "resume", "after_seq": "x"}))
        assert recv(ws)["code"] == "validation_error"


def test_resume_from_pruned_history_asks_for_a_resync(live_asgi, sender):
    user = User.objects.create(username="rt2", external_id="rt2")
    for i in range(3):
        send_in_app(sender, "rt2", f"n{i}")
    RealtimeEvent.objects.filter(user=user, seq__lte=2).delete()  # as retention pruning does
    with connect(f"{live_asgi.ws_url}/ws/v1/?token={tokens.issue_user_token(user)}") as ws:
        recv(ws)
        ws.send(json.dumps({"type": "resume", "after_seq": 0}))
        assert recv(ws) == {"type": "resync_required"}


def test_the_socket_closes_when_its_token_expires(live_asgi):
    user = User.objects.create(username="rt3", external_id="rt3")
    # Expires in 2 s (the leeway only applies to verification, not to the socket's lifetime).
    token = tokens.issue_user_token(user, ttl=2)
    with connect(f"{live_asgi.ws_url}/ws/v1/?token={token}") as ws:
        recv(ws)
        assert recv(ws, timeout=10)["code"] == "token_expired"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4401
