"""Query budgets on the messaging hot paths, through the entry point a user reaches.

The conversation list runs on Django's connection: ``django_assert_num_queries`` counts it and
prints the SQL when the budget breaks.

A websocket ``message.send`` runs on the event loop's own psycopg pool (``communication.adb``),
which Django's counter does not see. Its statements are counted by what PostgreSQL observed, not
by instrumenting our code: the loop's statements are prepared on their connection, and
``pg_prepared_statements`` says how many times each ran there (one connection in the pool for
the test); the flush that makes a send durable runs on a connection of its own and bumps a
counter row, ``communication_walflush.flushes``, once per flush. (``pg_stat_database`` was tried
first: a backend reports its counters up to ten seconds after going idle, and the socket's own
connect writes through other connections, so the deltas were not exact.)
"""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.testing import ApplicationCommunicator
from django.db import connection

from communication import adb
from communication.auth import tokens
from communication.models import RealtimeEvent, WalFlush
from communication.realtime import GatewayConsumer
from messaging import presence, services
from messaging.models import Message
from messaging.tests.conftest import make_user

# ------------------------------------------------------------------------- conversation list


def seed_conversations(alice, count: int, offset: int = 0) -> None:
    for i in range(offset, offset + count):
        other = make_user(f"q{i}")
        conversation, _ = services.conversation_create(
            user=alice, type="group", participants=[other.external_id, "bob"]
        )
        services.message_send(user=alice, conversation_id=conversation.id, content=f"hello {i}")


@pytest.mark.django_db
@pytest.mark.parametrize("conversations", [1, 20])
def test_conversation_list_costs_three_queries_whatever_the_conversations(
    as_user, alice, bob, conversations, django_assert_num_queries
):
    """The user, the page of the user's memberships (with each conversation and its last
    message), and the other members of the conversations on the page."""
    seed_conversations(alice, conversations)
    client = as_user(alice)
    client.get("/api/v1/conversations")
    with django_assert_num_queries(3):
        response = client.get("/api/v1/conversations")
    results = response.json()["results"]
    assert len(results) == conversations
    assert {len(c["participants"]) for c in results} == {3}


# --------------------------------------------------------------------- websocket message.send

_EXECUTIONS = (
    "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements "
    "WHERE statement NOT LIKE '%%pg_prepared_statements%%'"
)


async def loop_statements() -> dict[str, int]:
    """How many times each statement ran on the loop's one pooled connection."""
    return dict(await adb.fetchall(_EXECUTIONS, None))


def flushes() -> int:
    try:
        return sum(WalFlush.objects.values_list("flushes", flat=True))
    finally:
        connection.close()  # this thread's: closed before the next test, like the others


def websocket_sends(user, conversation_id: str, count: int):
    """Opens alice's socket, sends one message to warm it (pool, membership cache), then
    ``count`` more; returns (statements per kind on the loop's connection, flushes) of those."""

    async def send(ws, n: int) -> None:
        frame = {"type": "message.send", "conversation_id": conversation_id, "content": f"m{n}"}
        await ws.send_input(
            {"type": "websocket.receive", "text": json.dumps({**frame, "client_id": f"c{n}"})}
        )
        while True:  # skips the message.created events this socket also gets
            event = json.loads((await ws.receive_output(timeout=10))["text"])
            if event["type"] == "message.ack" and event["client_id"] == f"c{n}":
                assert event["replay"] is False
                return
            assert event["type"] != "error", event

    async def scenario():
        # The gateway as the ASGI server calls it (Channels' own communicator needs daphne).
        ws = ApplicationCommunicator(
            GatewayConsumer.as_asgi(),
            {
                "type": "websocket",
                "path": "/ws/v1/",
                "query_string": f"token={tokens.issue_user_token(user)}".encode(),
                "headers": [],
                "subprotocols": [],
            },
        )
        # Another socket of alice's already open: this one's connect and close change no
        # presence, so the gateway's presence threads stay out of the database.
        await presence.connection_open(user.pk, "budget-other-socket")
        await ws.send_input({"type": "websocket.connect"})
        assert (await ws.receive_output(timeout=10))["type"] == "websocket.accept"
        try:
            await send(ws, 0)
            before = await loop_statements(), await asyncio.to_thread(flushes)
            for n in range(1, count + 1):
                await send(ws, n)
            after = await loop_statements(), await asyncio.to_thread(flushes)
        finally:
            await ws.send_input({"type": "websocket.disconnect", "code": 1000})
            await ws.wait(timeout=10)
            await adb.close()
            await presence.connection_close(user.pk, "budget-other-socket")
        ran = {k: v - before[0].get(k, 0) for k, v in after[0].items()}
        return {k: v for k, v in ran.items() if v}, after[1] - before[1]

    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        started = cursor.fetchone()[0]
    try:
        return asyncio.run(scenario())
    finally:
        # The gateway's threads keep the connections they opened (the token check, "ready"):
        # closed here, or the test database cannot be dropped at the end of the session.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_start >= %s",
                [started],
            )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("members", [2, 20])
def test_a_websocket_send_costs_two_statements_whatever_the_members(settings, members):
    """Each message.send is the one send statement on the loop's pool and the one flush that
    makes it durable before the ack, for a direct conversation as for a group of 20 (recipients
    offline)."""
    settings.CELERY_QUEUE_PREFIX = "void-"  # the offline notifications' tasks: nobody runs them
    settings.DB_ASYNC_POOL_MAX_SIZE = 1  # every loop statement on the one connection asked
    alice = make_user("alice")
    others = [make_user(f"m{i}") for i in range(members - 1)]
    conversation, _ = services.conversation_create(
        user=alice,
        type="direct" if members == 2 else "group",
        participants=[u.external_id for u in others],
    )
    sends = 5

    statements, flushed = websocket_sends(alice, str(conversation.id), sends)

    ((statement, runs),) = statements.items()  # one kind of statement on the loop's pool …
    assert "INSERT INTO messaging_message" in statement and runs == sends  # … once per send
    assert flushed == sends
    texts = Message.objects.filter(conversation=conversation, type="text")
    assert texts.count() == sends + 1
    assert RealtimeEvent.objects.filter(type="message.created").count() == (sends + 1) * members
