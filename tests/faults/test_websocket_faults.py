"""Scenario 8, the websocket gateway: a client that stops reading cannot stall delivery to the
others (the gateway lets it go once a write to it has waited ``WS_SEND_TIMEOUT``; it resumes
after reconnecting and misses nothing), and a channel-layer outage (Redis behind a
``FaultProxy``) makes sends fail with an ``unavailable`` error event and recovers by itself
when Redis is back, with nothing lost."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
import uuid
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from communication.auth import tokens
from messaging.models import Message
from messaging.tests.conftest import (
    create_conversation,
    drain,
    make_user,
    of_type,
    recv_until,
    sockets,
)
from tests.faults.harness import FaultProxy

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.slow,
]


@pytest.fixture
def as_user():
    def make(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_user_token(user)}")
        return client

    return make


def named(who: str):
    return make_user(f"{who}-{uuid.uuid4().hex[:6]}")


def send(ws, conversation_id: str, client_id: str, content: str = "hello") -> None:
    ws.send(
        json.dumps(
            {
                "type": "message.send",
                "conversation_id": conversation_id,
                "content": content,
                "client_id": client_id,
            }
        )
    )


def answer(ws, timeout=10.0) -> dict:
    return recv_until(ws, lambda e: e.get("type") in ("message.ack", "error"), timeout)


# ------------------------------------------------------------------------------ a slow client


class Unread:
    """A websocket client on a raw socket with a small receive buffer that reads its ``ready``
    and then nothing more, until ``read_to_end``."""

    def __init__(self, server, user):
        host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws/v1/?token={tokens.issue_user_token(user)} HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.sock.settimeout(10)
        ready = self.frame()
        assert ready is not None and ready["type"] == "ready", ready

    def _read(self, n: int) -> bytes | None:
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def frame(self) -> dict | None:
        """The next text frame, or None once the server has closed the connection."""
        while True:
            head = self._read(2)
            if head is None:
                return None
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read(2) or b"\0\0")[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read(8) or b"\0" * 8)[0]
            payload = self._read(length)
            if payload is None or opcode == 0x8:
                return None
            if opcode == 0x1:
                return json.loads(payload)

    def read_to_end(self) -> list[dict]:
        events = []
        while (event := self.frame()) is not None:
            events.append(event)
        return events


@pytest.fixture(scope="module")
def impatient_asgi(start_live_asgi):
    # Writes to a client that does not read are given 2 s; the sender is not rate-limited.
    return start_live_asgi(
        {"WS_SEND_TIMEOUT": "2", "MESSAGING_WS_RATE": "1000", "MESSAGING_WS_BURST": "1000"}
    )


def test_a_client_that_stops_reading_stalls_no_one_and_misses_nothing(
    impatient_asgi, as_user, fault_report
):
    sender, slow = named("sender"), named("slow")
    readers = [named(f"reader{i}") for i in range(3)]
    conversation = create_conversation(
        as_user(sender),
        type_="group",
        participants=[u.external_id for u in (*readers, slow)],
        title="faults",
    )["id"]
    content = "x" * 8000  # the slow client's buffers fill in a few hundred messages
    unread = Unread(impatient_asgi, slow)
    started = time.monotonic()
    with sockets(impatient_asgi, [sender, *readers]) as (out, *ins):
        for ws in (out, *ins):
            drain(ws, quiet=0.3)
        sent, let_go_after = 0, None
        while let_go_after is None and sent < 800:
            client_id = f"m{sent}"
            send(out, conversation, client_id, content)
            assert answer(out)["type"] == "message.ack"
            sent += 1
            # Every reader gets every message while the slow one's buffers fill, and is told
            # when the gateway lets the slow one go (it is offline from then on).
            for ws in ins:
                event = recv_until(
                    ws,
                    lambda e, cid=client_id: (
                        (e.get("type") == "message.created" and e["data"]["client_id"] == cid)
                        or (
                            e.get("type") == "presence" and e["data"]["user_id"] == slow.external_id
                        )
                    ),
                )
                if event["type"] == "presence":
                    assert event["data"]["state"] == "offline"
                    let_go_after = let_go_after or sent
                    recv_until(
                        ws, lambda e, cid=client_id: e.get("data", {}).get("client_id") == cid
                    )
        assert let_go_after is not None, f"the slow client was still held after {sent} messages"
        # The others keep receiving after it was let go.
        send(out, conversation, "after", "after")
        assert answer(out)["type"] == "message.ack"
        for ws in ins:
            assert recv_until(ws, of_type("message.created"))["data"]["client_id"] == "after"
        sent += 1
    # The slow client reads at last: what the server still held for it, then the end.
    held = [e for e in unread.read_to_end() if e.get("type") == "message.created"]
    assert len(held) < sent
    seqs = [e["seq"] for e in held]
    # Reconnected, it resumes from its last seq and gets everything else, once.
    with sockets(impatient_asgi, [slow]) as (again,):
        drain(again, quiet=0.3)
        again.send(json.dumps({"type": "resume", "after_seq": max(seqs, default=0)}))
        missed = [
            recv_until(again, of_type("message.created"), timeout=10)["data"]["client_id"]
            for _ in range(sent - len(held))
        ]
    got = [e["data"]["client_id"] for e in held] + missed
    assert sorted(got) == sorted([f"m{i}" for i in range(sent - 1)] + ["after"])
    fault_report(
        f"injected: a client that stops reading after its ready, in a group of 5; "
        f"{sent} messages of 8 kB sent one after another (WS_SEND_TIMEOUT 2 s)",
        f"counted: 3 other readers got all {sent} (each before the next was sent); the slow "
        f"one was let go (offline for the others) after {let_go_after} messages, held "
        f"{len(held)} in its buffers, resumed the {len(missed)} others after reconnecting: "
        f"0 lost, 0 duplicated; {time.monotonic() - started:.1f} s in all",
    )


# ------------------------------------------------------------------- a channel-layer outage


@pytest.fixture(scope="module")
def redis_proxy():
    target = urlsplit(settings.REDIS_URL)
    proxy = FaultProxy((target.hostname or "127.0.0.1", target.port or 6379))
    try:
        yield proxy, target.path.lstrip("/") or "0"
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def proxied_asgi(start_live_asgi, redis_proxy):
    proxy, db = redis_proxy
    # Everything Redis of the server (channel layer, presence, cache) goes through the proxy.
    return start_live_asgi({"REDIS_URL": f"redis://127.0.0.1:{proxy.port}/{db}"})


def test_a_channel_layer_outage_fails_sends_with_an_error_and_recovers(
    proxied_asgi, redis_proxy, as_user, fault_report
):
    proxy, _ = redis_proxy
    alice, bob = named("alice"), named("bob")
    conversation = create_conversation(as_user(alice), participants=[bob.external_id])["id"]
    with sockets(proxied_asgi, [alice, bob]) as (out, inbox):
        for ws in (out, inbox):
            drain(ws, quiet=0.3)
        send(out, conversation, "before")
        assert answer(out)["type"] == "message.ack"
        seen = recv_until(inbox, of_type("message.created"))["seq"]

        proxy.down()
        down_at = time.monotonic()
        refused_in = []
        for i in range(3):  # over 4 s, so that the outage outlasts redis-py's retries
            if i:
                time.sleep(2)
            t0 = time.monotonic()
            send(out, conversation, f"during{i}")
            error = answer(out, timeout=30)
            refused_in.append(time.monotonic() - t0)
            assert error["type"] == "error" and error["code"] == "unavailable", error
            assert error["client_id"] == f"during{i}" and error["retry_after"] > 0, error
        proxy.up()
        up_at = time.monotonic()

        # Recovered once a send is acknowledged and reaches the other socket, live.
        recovered_in = None
        attempt = 0
        while recovered_in is None and time.monotonic() - up_at < 30:
            client_id = f"after{attempt}"
            attempt += 1
            send(out, conversation, client_id)
            if answer(out, timeout=30)["type"] != "message.ack":
                time.sleep(0.5)
                continue
            with contextlib.suppress(TimeoutError):
                recv_until(
                    inbox,
                    lambda e, cid=client_id: (
                        e.get("type") == "message.created" and e["data"]["client_id"] == cid
                    ),
                    timeout=3,
                )
                recovered_in = time.monotonic() - up_at
        assert recovered_in is not None, "no live delivery within 30 s of Redis' return"

        # What was refused was stored: sent again it is acknowledged as a replay, and the
        # other socket resumes it from its last seq.
        for i in range(3):
            send(out, conversation, f"during{i}")
            ack = answer(out)
            assert ack["type"] == "message.ack" and ack["replay"] is True, ack
        inbox.send(json.dumps({"type": "resume", "after_seq": seen}))
        resumed = drain(inbox, quiet=1.0)
        ids = [e["data"]["client_id"] for e in resumed if e.get("type") == "message.created"]
        assert {"during0", "during1", "during2"} <= set(ids), ids
        assert len(ids) == len(set(ids))
    stored = list(Message.objects.filter(conversation_id=conversation).values_list("client_id"))
    assert len(stored) == len(set(stored))
    fault_report(
        f"injected: Redis (channel layer, presence) unreachable for {up_at - down_at:.1f} s, "
        "3 websocket sends during it",
        f"counted: 3 answered 'unavailable' (slowest in {max(refused_in):.1f} s), stored, "
        f"replayed on resend and resumed by the recipient: 0 lost, 0 duplicated; live "
        f"delivery recovered {recovered_in:.1f} s after Redis returned ({attempt} sends)",
    )
