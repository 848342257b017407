"""The API's bodies, rendered by the output serializers, are the payloads the websocket events
carry (``messaging.services.*_payload``), key for key and value for value."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging import selectors, services
from messaging.models import Message, Participant
from messaging.tests.conftest import create_conversation, make_user, post_message

pytestmark = pytest.mark.django_db


def test_a_message_body_is_its_payload(as_user, alice, bob):
    a = as_user(alice)
    conversation = create_conversation(a, participants=["bob"])
    body = post_message(a, conversation["id"], "hello", metadata={"k": [1, {"x": None}]})
    message = Message.objects.get(id=body["id"])
    assert body == services.message_payload(message, alice.pk)
    assert a.get(f"/api/v1/messages/{message.id}").json() == body
    listed = a.get(f"/api/v1/conversations/{conversation['id']}/messages").json()
    assert listed == {"results": [body], "has_more": False}
    assert body["sent_at"].endswith("+00:00")  # the events' form, not DRF's "Z"


def test_a_conversation_body_is_its_payload_and_the_callers_state(as_user, alice, bob):
    a = as_user(alice)
    conversation = create_conversation(a, participants=["bob"], title="t")
    post_message(a, conversation["id"], "a " * 100)
    muted = a.post(
        f"/api/v1/conversations/{conversation['id']}/mute",
        {"until": (timezone.now() + dt.timedelta(hours=1)).isoformat()},
        format="json",
    ).json()
    body = a.get(f"/api/v1/conversations/{conversation['id']}").json()
    participant = selectors.conversation_get(user=alice, conversation_id=conversation["id"])
    members = participant.conversation.active_participants  # as the selector prefetched them
    expected = services.conversation_payload(participant.conversation, members)
    last = Message.objects.get(conversation_id=conversation["id"])
    expected.update(
        unread=0,
        role=participant.role,
        muted=True,
        muted_until=participant.muted_until.isoformat(),
        read_up_to=participant.last_read_message_id,
        last_message={
            "id": last.id,
            "sender": "alice",
            "type": "text",
            "preview": services.message_preview(last),
            "sent_at": last.sent_at.isoformat(),
            "deleted": False,
        },
    )
    assert body == expected
    assert list(body) == list(expected)  # the same order of keys too
    assert muted == {
        "conversation_id": conversation["id"],
        "muted": True,
        "until": participant.muted_until.isoformat(),
    }
    listed = a.get("/api/v1/conversations").json()["results"]
    assert listed == [body]


def test_read_and_participant_bodies(as_user, alice, bob, carol):
    a = as_user(alice)
    conversation = create_conversation(a, "group", participants=["bob"], title="g")
    message = post_message(as_user(bob), conversation["id"], "hi")
    read = a.post(
        f"/api/v1/conversations/{conversation['id']}/read",
        {"message_id": message["id"]},
        format="json",
    ).json()
    assert read["conversation_id"] == conversation["id"]
    assert read["read_up_to"] == message["id"]
    added = a.post(
        f"/api/v1/conversations/{conversation['id']}/participants",
        {"user_id": "carol"},
        format="json",
    )
    assert added.status_code == 201
    carol_in = Participant.objects.get(user=carol, conversation_id=conversation["id"])
    assert added.json() == services.participant_payload(carol_in)


def test_the_conversation_list_costs_the_same_for_more_conversations(as_user, alice):
    a = as_user(alice)

    def queries_for_list() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert a.get("/api/v1/conversations").status_code == 200
        return len(queries)

    for name in ("p1", "p2"):
        make_user(name)
        post_message(a, create_conversation(a, participants=[name])["id"], "x")
    few = queries_for_list()
    for name in ("p3", "p4", "p5"):
        make_user(name)
        post_message(a, create_conversation(a, participants=[name])["id"], "x")
    assert queries_for_list() == few
