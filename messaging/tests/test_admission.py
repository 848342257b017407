"""Admission control of websocket sends (messaging.admission), against a real uvicorn process:
past its bound a send is refused at once with an ``overloaded`` error carrying its
``client_id``, what was admitted is delivered, and nothing admitted is lost."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import transaction

from communication import realtime
from communication.models import UserSequence
from messaging.models import Message
from messaging.tests.conftest import (
    create_conversation,
    drain,
    make_user,
    of_type,
    recv_until,
    sockets,
)

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.slow,
]

# Two sends at once, two more may wait 0.3 s each, the rest are refused at once.
BOUND = {
    "MESSAGING_WS_MAX_INFLIGHT": "2",
    "MESSAGING_WS_MAX_QUEUED": "2",
    "MESSAGING_WS_QUEUE_WAIT": "0.3",
}


@pytest.fixture(scope="module")
def bounded_asgi(start_live_asgi):
    return start_live_asgi(BOUND)


def named(who: str):
    return make_user(f"{who}-{uuid.uuid4().hex[:6]}")


def send(ws, conversation_id: str, client_id: str) -> None:
    ws.send(
        json.dumps(
            {
                "type": "message.send",
                "conversation_id": conversation_id,
                "content": f"hello {client_id}",
                "client_id": client_id,
            }
        )
    )


def answer(ws, timeout=5.0) -> dict:
    """The sender's answer to its send: ``message.ack`` or an ``error``."""
    return recv_until(ws, lambda e: e.get("type") in ("message.ack", "error"), timeout)


def created(ws, count: int) -> list[str]:
    return [recv_until(ws, of_type("message.created"))["data"]["client_id"] for _ in range(count)]


def test_sends_past_the_bound_are_refused_at_once_and_the_admitted_delivered(bounded_asgi, as_user):
    reader = named("reader")
    senders = [named(f"s{i}") for i in range(6)]
    conversations = [
        create_conversation(as_user(s), participants=[reader.external_id])["id"] for s in senders
    ]
    with transaction.atomic():  # the reader's sequence row, which every send below takes
        realtime.publish_event(reader.pk, "test.event", {})
    with sockets(bounded_asgi, [reader, *senders]) as (inbox, *outs):
        for ws in (inbox, *outs):
            drain(ws, quiet=0.2)
        # While the row is locked every admitted send waits in PostgreSQL, holding its slot.
        with transaction.atomic():
            UserSequence.objects.select_for_update().get(user=reader)
            for i in (0, 1):
                send(outs[i], conversations[i], f"c{i}")
            drain(inbox, quiet=0.3)  # both are in flight
            for i in (2, 3):
                send(outs[i], conversations[i], f"c{i}")
            for i in (4, 5):
                send(outs[i], conversations[i], f"c{i}")
            # Still inside the lock: the queue is full, so c4 and c5 are refused without
            # waiting, and c2 and c3 once their 0.3 s are up; none of them waits for the lock.
            refusals = {i: answer(outs[i]) for i in (2, 3, 4, 5)}
        for i, error in refusals.items():
            assert error["type"] == "error" and error["code"] == "overloaded", error
            assert error["client_id"] == f"c{i}" and error["retry_after"] == 1.0, error
        # The lock is gone: the two admitted sends finish, are acknowledged and delivered.
        for i in (0, 1):
            ack = answer(outs[i])
            assert ack["type"] == "message.ack" and ack["client_id"] == f"c{i}", ack
        assert sorted(created(inbox, 2)) == ["c0", "c1"]
        assert not Message.objects.filter(client_id__in=["c2", "c3", "c4", "c5"]).exists()
        # A refused send, sent again with the same client_id, goes through once.
        for i in (2, 3, 4, 5):
            send(outs[i], conversations[i], f"c{i}")
            assert answer(outs[i])["type"] == "message.ack"
        assert sorted(created(inbox, 4)) == ["c2", "c3", "c4", "c5"]
        assert not [e for e in drain(inbox) if e.get("type") == "message.created"]
    stored = Message.objects.filter(conversation_id__in=conversations)
    assert sorted(stored.values_list("client_id", flat=True)) == [f"c{i}" for i in range(6)]


def test_under_a_burst_every_send_is_answered_and_every_admitted_one_delivered_once(
    bounded_asgi, as_user
):
    reader = named("reader")
    senders = [named(f"b{i}") for i in range(12)]
    conversations = [
        create_conversation(as_user(s), participants=[reader.external_id])["id"] for s in senders
    ]
    per_socket = 8
    with sockets(bounded_asgi, [reader, *senders]) as (inbox, *outs):
        for ws in (inbox, *outs):
            drain(ws, quiet=0.2)
        for n in range(per_socket):  # every socket's frames at once
            for i, ws in enumerate(outs):
                send(ws, conversations[i], f"b{i}-{n}")
        acked, refused = [], []
        for ws in outs:
            for _ in range(per_socket):
                event = answer(ws, timeout=15)
                if event["type"] == "message.ack":
                    acked.append(event["client_id"])
                else:
                    assert event["code"] == "overloaded", event
                    refused.append(event["client_id"])
        assert len(acked) + len(refused) == len(senders) * per_socket
        assert acked, "nothing was admitted"
        received = created(inbox, len(acked))
        assert sorted(received) == sorted(acked)
        assert not [e for e in drain(inbox) if e.get("type") == "message.created"]
    stored = Message.objects.filter(conversation_id__in=conversations)
    assert sorted(stored.values_list("client_id", flat=True)) == sorted(acked)
