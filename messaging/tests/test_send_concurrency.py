"""Sends at once in one conversation, on real PostgreSQL connections (one per thread): the
one-statement send keeps ids, sequences, watermarks and ``client_id`` replays right."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from django.db import connection

from communication import adb
from communication.models import RealtimeEvent, UserSequence
from messaging import presence, services
from messaging.models import Conversation, Message, Participant
from messaging.tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def run_threads(target, count: int) -> list:
    errors: list = []
    start = threading.Barrier(count)

    def body(i):
        try:
            start.wait()
            target(i)
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_concurrent_sends_keep_sequences_gap_free_and_replays_single():
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    conversation, _ = services.conversation_create(
        user=alice, type="group", participants=[bob.external_id, carol.external_id], title="t"
    )
    cid = str(conversation.id)
    before = {
        u.pk: UserSequence.objects.filter(user=u).values_list("last_seq", flat=True).first() or 0
        for u in (alice, bob, carol)
    }
    senders = [alice, bob, carol]

    def send(i):
        user = senders[i % 3]
        for n in range(5):
            services.message_send(
                user=user, conversation_id=cid, content=f"{i}-{n}", client_id=f"{i}-{n}"
            )
        # Every thread also sends the one same client id as alice: one message in all.
        services.message_send(user=alice, conversation_id=cid, content="once", client_id="same")

    assert run_threads(send, 6) == []

    texts = Message.objects.filter(conversation_id=cid, type="text")
    assert texts.count() == 6 * 5 + 1
    assert texts.filter(client_id="same").count() == 1
    last = texts.order_by("-id").first()
    assert Conversation.objects.get(pk=cid).last_message_id == last.id
    for user in (alice, bob, carol):
        seqs = list(
            RealtimeEvent.objects.filter(user=user, seq__gt=before[user.pk])
            .order_by("seq")
            .values_list("seq", "type", "data")
        )
        created = [d["id"] for _, t, d in seqs if t == "message.created"]
        # Gap-free, and every member got every message once, in id order.
        assert [s for s, _, _ in seqs] == list(range(before[user.pk] + 1, before[user.pk] + 32))
        assert created == sorted(texts.values_list("id", flat=True))
        mine = texts.filter(sender=user).order_by("-id").first()
        me = Participant.objects.get(conversation_id=cid, user=user)
        assert me.last_read_message_id >= mine.id


def test_a_non_member_sends_nothing_and_learns_nothing():
    alice, bob, mallory = make_user("alice"), make_user("bob"), make_user("mallory")
    conversation, _ = services.conversation_create(
        user=alice, type="direct", participants=[bob.external_id]
    )
    with pytest.raises(services.NotFoundError):
        services.message_send(user=mallory, conversation_id=str(conversation.id), content="hi")
    assert not Message.objects.filter(conversation=conversation, sender=mallory).exists()
    assert not RealtimeEvent.objects.filter(user=bob, type="message.created").exists()


def test_the_event_loop_path_replaces_a_broken_connection():
    """The gateway's text send runs on its own async pool; a connection the server dropped
    (a restart) is replaced and the message still goes through, once."""
    alice, bob = make_user("alice"), make_user("bob")
    conversation, _ = services.conversation_create(
        user=alice, type="direct", participants=[bob.external_id]
    )
    cid = str(conversation.id)

    def drop_pool_connections():
        # Only this process's event-loop connections: the live servers and workers of other
        # tests keep theirs.
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = %s",
                    [f"communication-loop-{os.getpid()}"],
                )
                assert cursor.fetchall(), "the pool had connections to drop"
        finally:
            connection.close()

    async def scenario():
        try:
            first = await services.message_send_async(
                user=alice, conversation_id=cid, content="one", client_id="a"
            )
            await asyncio.to_thread(drop_pool_connections)
            second = await services.message_send_async(
                user=alice, conversation_id=cid, content="two", client_id="b"
            )
            return first, second
        finally:
            await adb.close()

    first, second = asyncio.run(scenario())
    assert first[1] and second[1]
    assert list(
        Message.objects.filter(conversation_id=cid, type="text").values_list("content", flat=True)
    ) == ["one", "two"]


def test_a_send_goes_through_without_presence(settings):
    """Presence lives in Redis; a message is stored before anyone's presence is asked, so with
    presence unreachable the message and its events still go out (recipients count as
    offline)."""
    alice, bob = make_user("alice"), make_user("bob")
    conversation, _ = services.conversation_create(
        user=alice, type="direct", participants=[bob.external_id]
    )
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    message, created = services.message_send(
        user=alice, conversation_id=str(conversation.id), content="still here", client_id="x"
    )
    assert created and Message.objects.get(pk=message.pk).content == "still here"
    event = RealtimeEvent.objects.get(user=bob, type="message.created")
    assert event.payload["id"] == message.pk
    bob_row = Participant.objects.get(conversation=conversation, user=bob)
    assert bob_row.last_delivered_message_id is None  # not known to be online


def test_an_api_send_marks_online_recipients_delivered():
    """The API's send (a thread, not the gateway) asks presence after its statement."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    conversation, _ = services.conversation_create(
        user=alice, type="group", participants=[bob.external_id, carol.external_id], title="t"
    )

    def send():
        try:
            return services.message_send(
                user=alice, conversation_id=str(conversation.id), content="hello"
            )[0]
        finally:
            connection.close()

    async def scenario():  # one event loop: the presence client is bound to it
        await presence.connection_open(bob.pk, "bob-socket")
        try:
            return await asyncio.to_thread(send)
        finally:
            await presence.connection_close(bob.pk, "bob-socket")

    message = asyncio.run(scenario())
    rows = {p.user_id: p for p in Participant.objects.filter(conversation=conversation)}
    assert rows[bob.pk].last_delivered_message_id == message.id  # online
    assert rows[carol.pk].last_delivered_message_id is None  # offline
    assert rows[alice.pk].last_read_message_id == message.id  # the sender read it


def test_the_event_loop_path_plans_the_send_once(settings):
    """The gateway's send statement is prepared on its connection: PostgreSQL plans it once, not
    on every message (Django's own connection settings turn prepared statements off)."""
    settings.DB_ASYNC_POOL_MAX_SIZE = 1  # every statement on the one connection asked below
    alice, bob = make_user("alice"), make_user("bob")
    conversation, _ = services.conversation_create(
        user=alice, type="direct", participants=[bob.external_id]
    )

    async def scenario():
        try:
            for n in range(3):
                await services.message_send_async(
                    user=alice, conversation_id=str(conversation.id), content=f"m{n}"
                )
            return await adb.fetchall(
                "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements", None
            )
        finally:
            await adb.close()

    prepared = asyncio.run(scenario())
    sends = [runs for statement, runs in prepared if "INSERT INTO messaging_message" in statement]
    assert sends == [3]


@pytest.mark.parametrize("before_flush", [True, False])
def test_the_event_loop_path_publishes_once_in_either_order(settings, before_flush):
    """Recipients before the flush or after it: either way the send's events go out once, to
    every member."""
    settings.MESSAGING_DELIVER_BEFORE_FLUSH = before_flush
    alice, bob = make_user("alice"), make_user("bob")
    conversation, _ = services.conversation_create(
        user=alice, type="direct", participants=[bob.external_id]
    )
    published = []

    async def publish(events):
        published.append(events)

    async def scenario():
        try:
            message, created, *_ = await services.message_send_async(
                user=alice, conversation_id=str(conversation.id), content="hi", publish=publish
            )
            return message, created
        finally:
            await adb.close()

    message, created = asyncio.run(scenario())
    assert created and len(published) == 1
    assert {(pk, event["type"], event["data"]["id"]) for pk, event in published[0]} == {
        (alice.pk, "message.created", message.id),
        (bob.pk, "message.created", message.id),
    }
