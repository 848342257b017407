"""The per-user event sequence: one definition (``realtime.sequence_events_sql``) used by
``publish_event``, ``publish_events`` and other apps' statements (a message's send)."""

from __future__ import annotations

import pathlib

import pytest
from django.db import transaction

from communication import realtime
from communication.models import RealtimeEvent, User, UserSequence
from messaging import services

pytestmark = pytest.mark.django_db


def make(name: str) -> User:
    return User.objects.create(username=name, external_id=name, name=name.title())


def test_every_publisher_takes_the_next_seq_from_the_one_sequence():
    alice, bob = make("alice"), make("bob")
    conversation, _ = services.conversation_create(user=alice, type="direct", participants=["bob"])
    with transaction.atomic():
        realtime.publish_event(bob.pk, "one", {"n": 1})
        realtime.publish_events("many", {bob.pk: {"n": 2}, alice.pk: {"n": 2}})
    services.message_send(user=alice, conversation_id=conversation.id, content="three")
    with transaction.atomic():
        last = realtime.publish_event(bob.pk, "four", {"n": 4})

    events = list(RealtimeEvent.objects.filter(user=bob).order_by("seq").values_list("seq", "type"))
    # bob's first event is the conversation's creation (participant.added).
    assert events == [
        (1, "participant.added"),
        (2, "one"),
        (3, "many"),
        (4, "message.created"),
        (5, "four"),
    ]
    assert last == 5 == UserSequence.objects.get(user=bob).last_seq
    assert [s for s, _ in RealtimeEvent.objects.filter(user=alice).values_list("seq", "type")] == [
        1,
        2,
    ]


def test_publish_events_returns_each_users_seq_under_the_key_given():
    alice, bob = make("alice"), make("bob")
    with transaction.atomic():
        first = realtime.publish_events("x", {alice.pk: {}, bob.pk: {}})
        second = realtime.publish_events("x", {str(alice.pk): {}})
    assert first == {alice.pk: 1, bob.pk: 1}
    assert second == {str(alice.pk): 2}


def test_no_other_app_spells_the_sequence_tables():
    """The sequence and event tables are named by ``communication.realtime`` alone."""
    names = (UserSequence._meta.db_table, RealtimeEvent._meta.db_table)
    root = pathlib.Path(__file__).resolve().parents[2]
    offenders = [
        str(path.relative_to(root))
        for app in ("messaging", "notifications", "campaigns", "analytics", "templates_app")
        for path in (root / app).rglob("*.py")
        if "migrations" not in path.parts
        and "tests" not in path.parts
        and any(name in path.read_text() for name in names)
    ]
    assert offenders == []
