"""Messaging over the gateway against real uvicorn processes and real websocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import pytest
from websockets.sync.client import connect

from communication.auth import tokens
from conftest import LiveServer
from messaging import presence, services
from messaging.models import Message, MessageEdit, Participant, UserPresence
from messaging.tests.conftest import create_conversation, drain, make_user, of_type, recv_until

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@contextlib.contextmanager
def socket(server_ws_url, user):
    with connect(f"{server_ws_url}/ws/v1/?token={tokens.issue_user_token(user)}") as ws:
        ready = json.loads(ws.recv(timeout=5))
        assert ready["type"] == "ready", ready
        yield ws


def names(n):
    tag = uuid.uuid4().hex[:6]
    return [make_user(f"{who}-{tag}") for who in n]


def created_for(client_id):
    return lambda e: e.get("type") == "message.created" and e["data"]["client_id"] == client_id


def test_two_users_exchange_messages_edits_and_deletes(live_asgi, as_user):
    alice, bob, carol = names(["alice", "bob", "carol"])
    conv = create_conversation(as_user(alice), participants=[bob.external_id])
    with (
        socket(live_asgi.ws_url, alice) as wa,
        socket(live_asgi.ws_url, bob) as wb,
        socket(live_asgi.ws_url, carol) as wc,
    ):
        drain(wa), drain(wb)
        # alice → bob
        cid = str(uuid.uuid4())
        started = time.monotonic()
        wa.send(
            json.dumps(
                {
                    "type": "message.send",
                    "conversation_id": conv["id"],
                    "content": "hi *bob*",
                    "client_id": cid,
                }
            )
        )
        got = recv_until(wb, created_for(cid))
        assert time.monotonic() - started < 1.0
        assert got["seq"] >= 1
        assert (
            got["data"]["sender"] == alice.external_id
            and got["data"]["html"] == "<p>hi <em>bob</em></p>"
        )
        assert got["data"]["conversation_id"] == conv["id"] and got["data"]["content"] == "hi *bob*"
        ack = recv_until(wa, of_type("message.ack"))
        assert ack["client_id"] == cid and ack["replay"] is False
        # bob → alice
        reply = str(uuid.uuid4())
        started = time.monotonic()
        wb.send(
            json.dumps(
                {
                    "type": "message.send",
                    "conversation_id": conv["id"],
                    "content": "hello",
                    "client_id": reply,
                }
            )
        )
        back = recv_until(wa, created_for(reply))
        assert time.monotonic() - started < 1.0 and back["data"]["sender"] == bob.external_id
        # The same client id again: acknowledged as a replay, stored once, published once.
        wa.send(
            json.dumps(
                {
                    "type": "message.send",
                    "conversation_id": conv["id"],
                    "content": "hi *bob*",
                    "client_id": cid,
                }
            )
        )
        replay = recv_until(wa, of_type("message.ack"))
        assert replay["replay"] is True and replay["id"] == got["data"]["id"]
        assert Message.objects.filter(client_id=cid).count() == 1
        # Edit and delete through the API reach both sockets.
        a = as_user(alice)
        assert (
            a.put(
                f"/api/v1/messages/{got['data']['id']}", {"content": "edited"}, format="json"
            ).status_code
            == 200
        )
        for ws in (wa, wb):
            updated = recv_until(ws, of_type("message.updated"))
            assert updated["data"]["content"] == "edited" and updated["data"]["edited_at"]
        assert a.delete(f"/api/v1/messages/{got['data']['id']}").status_code == 204
        for ws in (wa, wb):
            deleted = recv_until(ws, of_type("message.deleted"))
            assert deleted["data"]["id"] == got["data"]["id"] and deleted["data"]["content"] == ""
        assert list(
            MessageEdit.objects.filter(message_id=got["data"]["id"]).values_list(
                "action", "previous_content"
            )
        ) == [("edit", "hi *bob*"), ("delete", "edited")]
        # Carol, not a participant, got nothing of it, and cannot post or type into it.
        leaked = [
            e for e in drain(wc) if e.get("type", "").startswith(("message.", "typing", "receipt"))
        ]
        assert leaked == []
        wc.send(
            json.dumps(
                {
                    "type": "message.send",
                    "conversation_id": conv["id"],
                    "content": "x",
                    "client_id": "c1",
                }
            )
        )
        assert recv_until(wc, of_type("error"))["code"] == "not_found"
        wc.send(json.dumps({"type": "typing", "conversation_id": conv["id"]}))
        assert recv_until(wc, of_type("error"))["code"] == "not_found"
        assert not [e for e in drain(wa) + drain(wb) if e.get("type") == "typing"]


def test_bad_input_is_answered_and_the_socket_stays_open(live_asgi, settings, as_user):
    alice, bob = names(["alice", "bob"])
    conv = create_conversation(as_user(alice), participants=[bob.external_id])
    with socket(live_asgi.ws_url, alice) as ws:
        for bad in (
            {"type": "message.send"},
            {"type": "message.send", "conversation_id": "nope", "content": "x"},
            {"type": "message.send", "conversation_id": conv["id"], "content": 5},
            {
                "type": "message.send",
                "conversation_id": conv["id"],
                "content": "x",
                "client_id": "c" * 65,
            },
            {"type": "message.send", "conversation_id": conv["id"], "content": "   "},
            {"type": "typing", "conversation_id": conv["id"], "state": "dancing"},
            {"type": "read", "conversation_id": conv["id"], "message_id": "x"},
            {"type": "presence.ping", "user_ids": "everyone"},
        ):
            ws.send(json.dumps(bad))
            error = recv_until(ws, of_type("error"))
            assert error["code"] == "validation_error", (bad, error)
        ws.send(json.dumps({"type": "ping", "id": 7}))
        assert recv_until(ws, of_type("pong"))["id"] == 7
        # Rate limit: a burst beyond the bucket is refused, the socket stays.
        for _ in range(40):
            ws.send(json.dumps({"type": "read", "conversation_id": conv["id"], "message_id": 1}))
        assert recv_until(ws, lambda e: e.get("code") == "rate_limited")
        ws.send(json.dumps({"type": "ping", "id": 8}))
        assert recv_until(ws, of_type("pong"))["id"] == 8


def test_receipts_reach_the_sender_and_typing_expires(live_asgi, as_user):
    alice, bob = names(["alice", "bob"])
    conv = create_conversation(as_user(alice), participants=[bob.external_id])
    with socket(live_asgi.ws_url, alice) as wa, socket(live_asgi.ws_url, bob) as wb:
        drain(wa), drain(wb)
        wa.send(
            json.dumps(
                {
                    "type": "message.send",
                    "conversation_id": conv["id"],
                    "content": "one",
                    "client_id": "r1",
                }
            )
        )
        mid = recv_until(wb, created_for("r1"))["data"]["id"]
        wb.send(json.dumps({"type": "read", "conversation_id": conv["id"], "message_id": mid}))
        receipt = recv_until(wa, of_type("receipt"))
        assert receipt["seq"] and receipt["data"] == {
            "conversation_id": conv["id"],
            "user_id": bob.external_id,
            "delivered_up_to": mid,
            "read_up_to": mid,
        }
        row = as_user(bob).get("/api/v1/conversations").json()["results"][0]
        assert row["unread"] == 0 and row["read_up_to"] == mid

        wa.send(json.dumps({"type": "typing", "conversation_id": conv["id"]}))
        started = recv_until(wb, of_type("typing"))
        t0 = time.monotonic()
        assert started["data"] == {
            "conversation_id": conv["id"],
            "user_id": alice.external_id,
            "state": "started",
        }
        assert "seq" not in started
        stopped = recv_until(wb, of_type("typing"), timeout=8)
        waited = time.monotonic() - t0
        assert stopped["data"]["state"] == "stopped" and 4.5 <= waited <= 6.5, waited
        # A renewed start keeps it going; a message stops it at once.
        wa.send(json.dumps({"type": "typing", "conversation_id": conv["id"]}))
        recv_until(wb, of_type("typing"))
        time.sleep(3)
        wa.send(json.dumps({"type": "typing", "conversation_id": conv["id"]}))
        time.sleep(3)  # 6 s after the first start, 3 s after the renewal: still typing
        assert not [e for e in drain(wb, 0.1) if e.get("type") == "typing"]
        wa.send(
            json.dumps(
                {
                    "type": "message.send",
                    "conversation_id": conv["id"],
                    "content": "done",
                    "client_id": "r2",
                }
            )
        )
        assert recv_until(wb, of_type("typing"))["data"]["state"] == "stopped"
        # This socket knew the members (typing): bob, online, had "done" delivered by the
        # send's own statement; what he read stays where he left it.
        done = Message.objects.get(conversation_id=conv["id"], client_id="r2")
        bob_row = Participant.objects.get(conversation_id=conv["id"], user=bob)
        assert bob_row.last_delivered_message_id == done.id
        assert bob_row.last_read_message_id == mid
        assert (
            Participant.objects.get(conversation_id=conv["id"], user=alice).last_read_message_id
            == done.id
        )


@pytest.fixture
def second_asgi(live_asgi, tmp_path):
    """Another uvicorn process on the same database and Redis channel layer."""
    server = LiveServer(tmp_path / "asgi2.log")
    try:
        yield server.ws_url
    finally:
        server.stop()


def test_presence_across_two_asgi_processes(live_asgi, second_asgi, as_user):
    alice, bob, stranger = names(["alice", "bob", "stranger"])
    create_conversation(as_user(alice), participants=[bob.external_id])
    with (
        socket(second_asgi, bob) as wb,
        socket(live_asgi.ws_url, stranger) as ws_stranger,
        contextlib.ExitStack() as stack,
    ):
        drain(wb)
        first = stack.enter_context(socket(live_asgi.ws_url, alice))  # process 1
        online = recv_until(wb, of_type("presence"))
        assert (
            online["data"]["user_id"] == alice.external_id and online["data"]["state"] == "online"
        )
        assert "seq" not in online
        second = stack.enter_context(socket(second_asgi, alice))  # process 2, same user
        first.close()  # one socket left on the other process: still online
        wb.send(
            json.dumps(
                {"type": "presence.ping", "user_ids": [alice.external_id, stranger.external_id]}
            )
        )
        answered = recv_until(wb, of_type("presence"))
        assert (
            answered["data"]["user_id"] == alice.external_id
            and answered["data"]["state"] == "online"
        )
        assert not [e for e in drain(wb) if e.get("type") == "presence"], "no offline, no stranger"
        t_close = time.time()
        second.close()
        offline = recv_until(wb, of_type("presence"))
        assert (
            offline["data"]["state"] == "offline"
            and offline["data"]["user_id"] == alice.external_id
        )
        assert offline["data"]["last_seen"]
        seen = UserPresence.objects.get(user=alice).last_seen_at.timestamp()
        assert abs(seen - t_close) < 5
        # The stranger shares no conversation: told nothing.
        assert not [e for e in drain(ws_stranger) if e.get("type") == "presence"]
        wb.send(json.dumps({"type": "presence.ping", "user_ids": [alice.external_id]}))
        later = recv_until(wb, of_type("presence"))
        assert later["data"]["state"] == "offline" and later["data"]["last_seen"]


def test_lapsed_heartbeats_go_offline_in_the_sweep(as_user, settings):
    """A process that dies leaves its sockets in Redis until their heartbeats expire."""
    alice, bob = names(["alice", "bob"])
    create_conversation(as_user(alice), participants=[bob.external_id])
    settings.MESSAGING_PRESENCE_TTL_SECONDS = 1
    assert asyncio.run(presence.connection_open(alice.pk, "dead-process-socket"))
    assert presence.online([str(alice.pk)]) == {str(alice.pk)}
    time.sleep(1.2)
    assert presence.online([str(alice.pk)]) == set()
    assert services.presence_sweep() >= 1
    assert UserPresence.objects.filter(user=alice).exists()
    assert services.presence_sweep() == 0


def test_the_process_renews_its_sockets_heartbeats_until_they_close(settings):
    """Each process renews its open sockets' heartbeats (one round a second, each socket once per
    HEARTBEAT): a tracked socket outlives its TTL; once untracked (closed), it lapses."""
    settings.MESSAGING_PRESENCE_HEARTBEAT_SECONDS = 1
    settings.MESSAGING_PRESENCE_TTL_SECONDS = 2
    alice, bob = names(["alice", "bob"])
    kept, dropped = str(alice.pk), str(bob.pk)

    async def scenario():
        await presence.connection_open(kept, "kept-socket")
        presence.track(kept, "kept-socket")
        await presence.connection_open(dropped, "untracked-socket")
        await asyncio.sleep(3.2)
        both = await presence.aonline([kept, dropped])
        presence.untrack("kept-socket")
        await asyncio.sleep(2.2)
        return both, await presence.aonline([kept])

    while_tracked, after = asyncio.run(scenario())
    assert while_tracked == {kept}, "the tracked socket was renewed, the other one lapsed"
    assert after == set()
