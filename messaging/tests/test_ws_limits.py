"""The gateway's frame limits and NUL refusal, against a real uvicorn process (defaults:
MESSAGING_WS_BURST 30 frames a kind, WS_RESUME_PER_MINUTE 5)."""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from django.db import transaction
from websockets.sync.client import connect

from communication import realtime
from communication.auth import tokens
from messaging.models import Message
from messaging.tests.conftest import create_conversation, drain, make_user, of_type, recv_until

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@contextlib.contextmanager
def socket(server_ws_url, user):
    with connect(f"{server_ws_url}/ws/v1/?token={tokens.issue_user_token(user)}") as ws:
        ready = json.loads(ws.recv(timeout=5))
        assert ready["type"] == "ready", ready
        yield ws


def named(who: str):
    return make_user(f"{who}-{uuid.uuid4().hex[:6]}")


def receive_all(ws, count: int) -> list[dict]:
    return [json.loads(ws.recv(timeout=5)) for _ in range(count)]


def still_open(ws) -> None:
    ws.send(json.dumps({"type": "presence.ping"}))  # a kind of its own, not yet limited
    ws.send(json.dumps({"type": "message.send"}))
    assert recv_until(ws, of_type("error"))["code"] == "validation_error"


def test_resume_is_allowed_a_few_times_a_minute(live_asgi):
    user = named("resumer")
    with transaction.atomic():
        for n in range(3):
            realtime.publish_event(user.pk, "test.event", {"n": n})
    with socket(live_asgi.ws_url, user) as ws:
        drain(ws)
        for _ in range(20):
            ws.send(json.dumps({"type": "resume", "after_seq": 0}))
        answers = receive_all(ws, 5 * 3 + 15)
        replayed = [a for a in answers if a["type"] == "test.event"]
        refused = [a for a in answers if a.get("code") == "rate_limited"]
        assert [e["seq"] for e in replayed] == [1, 2, 3] * 5
        assert len(refused) == 15
        # Five a minute: the next one is about 12 s away.
        assert all(10 < r["retry_after"] <= 12 for r in refused), refused[0]
        assert refused[0]["type"] == "error"
        still_open(ws)


def test_pings_and_unknown_kinds_are_limited_without_closing(live_asgi):
    user = named("pinger")
    with socket(live_asgi.ws_url, user) as ws:
        for i in range(40):
            ws.send(json.dumps({"type": "ping", "id": i}))
        answers = receive_all(ws, 40)
        assert [a["id"] for a in answers if a["type"] == "pong"] == list(range(30))
        limited = [a for a in answers if a.get("code") == "rate_limited"]
        assert len(limited) == 10 and all(0 < a["retry_after"] <= 1 for a in limited)
        # Invented kinds share one bucket rather than one each.
        for i in range(40):
            ws.send(json.dumps({"type": f"made-up-{i}"}))
        codes = [a["code"] for a in receive_all(ws, 40)]
        assert codes.count("validation_error") == 30 and codes.count("rate_limited") == 10
        still_open(ws)


def test_nul_in_a_frame_is_refused_naming_the_field(live_asgi, as_user):
    alice, bob = named("alice"), named("bob")
    conv = create_conversation(as_user(alice), participants=[bob.external_id])
    with socket(live_asgi.ws_url, alice) as ws:
        drain(ws)
        for frame, field in (
            (
                {
                    "type": "message.send",
                    "conversation_id": conv["id"],
                    "content": "a\u0000b",
                    "client_id": "c1",
                },
                "content",
            ),
            (
                {"type": "message.send", "conversation_id": conv["id"], "client_id": "c\u00002"},
                "client_id",
            ),
            ({"type": "presence.ping", "user_ids": ["bob", "x\u0000"]}, "user_ids[1]"),
            ({"type": "typing", "conversation_id": conv["id"], "meta": {"k": "\u0000"}}, "meta.k"),
        ):
            ws.send(json.dumps(frame))
            error = recv_until(ws, of_type("error"))
            assert error["code"] == "validation_error", (frame, error)
            assert list(error["fields"]) == [field], error
            assert field in error["detail"]
        # The client can match the refusal of its send.
        ws.send(
            json.dumps(
                {
                    "type": "message.send",
                    "conversation_id": conv["id"],
                    "content": "\u0000",
                    "client_id": "c3",
                }
            )
        )
        assert recv_until(ws, of_type("error"))["client_id"] == "c3"
        ws.send(
            json.dumps(
                {
                    "type": "message.send",
                    "conversation_id": conv["id"],
                    "content": "fine",
                    "client_id": "c4",
                }
            )
        )
        assert recv_until(ws, of_type("message.ack"))["client_id"] == "c4"
    assert list(
        Message.objects.filter(conversation_id=conv["id"]).values_list("content", flat=True)
    ) == ["fine"]
