"""One statement writes every message: the API's send (threads), the websocket's send (the event
loop) and system messages give the same rows and the same persisted events for the same input."""

from __future__ import annotations

import asyncio
import io
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection, transaction
from PIL import Image

from communication import adb
from communication.exceptions import APIError
from communication.models import RealtimeEvent
from conftest import assert_encrypted
from messaging import services
from messaging.models import Attachment, Message, Participant
from messaging.services.payloads import message_payload
from messaging.tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (30, 20), (0, 0, 255)).save(out, format="PNG")
    return out.getvalue()


def websocket_send(**kwargs):
    """The websocket route's send (what ``message.send`` on the gateway calls), on a loop."""

    async def scenario():
        try:
            return await services.message_send_async(**kwargs)
        finally:
            await adb.close()

    try:
        return asyncio.run(scenario())
    finally:
        connection.close()


def attachment_shape(item: dict, viewer) -> dict:
    url = urlparse(item["url"])
    return {
        "content_type": item["content_type"],
        "size": item["size"],
        "width": item["width"],
        "height": item["height"],
        "thumbnail": item["thumbnail_url"] is not None,
        "path": url.path.replace(item["id"], "<id>"),
        "signed_for_viewer": parse_qs(url.query)["u"] == [str(viewer)],
    }


def shape(message_id: int) -> dict:
    """A message's row and its ``message.created`` events, without what differs by design
    (ids, conversation, time)."""
    m = Message.objects.get(id=message_id)
    events = {
        e.user_id: e.payload
        for e in RealtimeEvent.objects.filter(type="message.created", data__id=message_id)
    }
    normalised = {}
    for user_pk, event_data in events.items():
        data = dict(event_data)
        assert data.pop("id") == m.id and data.pop("conversation_id") == str(m.conversation_id)
        assert data.pop("parent_id") == m.parent_id and data.pop("sent_at")
        data["attachments"] = sorted(
            (attachment_shape(a, user_pk) for a in data["attachments"]), key=str
        )
        normalised[user_pk] = data
    marks = {
        p.user_id: (p.last_read_message_id == m.id, p.last_delivered_message_id == m.id)
        for p in Participant.objects.filter(conversation_id=m.conversation_id)
    }
    return {
        "row": (m.type, m.content, m.html, m.client_id, m.metadata, m.sender_id),
        "thread": m.parent_id is not None,
        "attachments": sorted(
            (a.content_type, a.size, a.uploader_id) for a in Attachment.objects.filter(message=m)
        ),
        "events": normalised,
        "marks": marks,
        "last_message": m.conversation.last_message_id == m.id,
    }


@pytest.fixture
def people():
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    rooms = [
        services.conversation_create(
            user=alice, type="group", participants=["bob", "carol"], title="t"
        )[0]
        for _ in range(2)
    ]
    return alice, bob, carol, [str(r.id) for r in rooms]


@pytest.mark.parametrize("with_attachments", [False, True])
def test_the_api_and_the_websocket_write_the_same_message(people, with_attachments):
    alice, bob, carol, (api_room, ws_room) = people
    roots = {}
    for room in (api_room, ws_room):
        first = services.message_send(user=bob, conversation_id=room, content="root")[0]
        reply = services.message_send(
            user=carol, conversation_id=room, content="reply", parent_id=first.id
        )[0]
        roots[room] = (first.id, reply.id)

    def attachments():
        if not with_attachments:
            return []
        return [
            str(services.attachment_upload(user=alice, data=png(), name=f"{n}.png").id)
            for n in range(2)
        ]

    api_message, api_created = services.message_send(
        user=alice,
        conversation_id=api_room,
        content="hi *all*",
        client_id="same-input",
        parent_id=roots[api_room][1],  # a reply to a reply joins the root's thread
        attachment_ids=attachments(),
    )
    ws_message, ws_created, ws_events, _, _ = websocket_send(
        user=alice,
        conversation_id=ws_room,
        content="hi *all*",
        client_id="same-input",
        parent_id=roots[ws_room][1],
        attachment_ids=attachments(),
    )

    assert api_created and ws_created
    assert api_message.parent_id == roots[api_room][0]
    assert ws_message.parent_id == roots[ws_room][0]
    api, ws = shape(api_message.id), shape(ws_message.id)
    assert api == ws
    assert set(api["events"]) == {alice.pk, bob.pk, carol.pk}
    assert len(api["attachments"]) == (2 if with_attachments else 0)
    if with_attachments:
        assert all(
            a["signed_for_viewer"] for data in api["events"].values() for a in data["attachments"]
        )
    # What the websocket sent live is what it persisted.
    persisted = {
        e.user_id: (e.seq, e.payload)
        for e in RealtimeEvent.objects.filter(type="message.created", data__id=ws_message.id)
    }
    assert {pk: (event["seq"], event["data"]) for pk, event in ws_events} == persisted
    # Both routes store ciphertext (``communication.fields``), as messaging/tests/test_encryption
    # checks for the other write paths.
    for message in (api_message, ws_message):
        assert_encrypted(message, "content", "hi *all*")
        assert_encrypted(message, "html", "<em>all</em>")


def test_a_system_message_goes_through_the_same_write(people):
    """Its events are what the API shows of its row, each with the member's next seq; its actor
    need not be a member any more (someone leaving)."""
    alice, bob, carol, (room, _) = people
    services.conversation_leave(user=carol, conversation_id=room)
    system = Message.objects.get(conversation_id=room, type="system", sender=carol)
    assert system.content == "Carol left"
    events = {
        e.user_id: e
        for e in RealtimeEvent.objects.filter(type="message.created", data__id=system.id)
    }
    assert set(events) == {alice.pk, bob.pk}  # carol had left when it was written
    for user_pk, event in events.items():
        assert event.payload == message_payload(system, user_pk, [])
        previous = RealtimeEvent.objects.filter(user_id=user_pk, seq=event.seq - 1)
        assert previous.exists()  # gap-free: the same sequence as every other event

    with transaction.atomic():
        written = services.system_message_send(room, alice, "Alice pinned", event="pinned")
    assert shape(written.id)["row"] == (
        "system",
        "Alice pinned",
        "<p>Alice pinned</p>",
        "",
        {"event": "pinned"},
        alice.pk,
    )


@pytest.mark.parametrize("route", ["api", "websocket"])
def test_a_replay_answers_with_the_first_message_before_its_parent_is_checked(people, route):
    """Found while merging the copies: the API's text send checked the parent before it saw the
    replay, and answered a retried reply whose parent was since hard-deleted with a 400; the
    attachment send answered with the first message. A replay is answered with the first
    message on every route."""
    alice, bob, _, (room, _) = people
    parent = services.message_send(user=bob, conversation_id=room, content="parent")[0]
    first, created = services.message_send(
        user=alice, conversation_id=room, content="reply", client_id="r1", parent_id=parent.id
    )
    assert created
    Message.objects.filter(id=parent.id).delete()
    events_before = RealtimeEvent.objects.count()

    kwargs = dict(
        user=alice, conversation_id=room, content="reply", client_id="r1", parent_id=parent.id
    )
    if route == "api":
        again, created = services.message_send(**kwargs)
    else:
        again, created, events, offline, _ = websocket_send(**kwargs)
        assert events == [] and offline == []
    assert not created and again.id == first.id and again.content == "reply"
    assert RealtimeEvent.objects.count() == events_before


@pytest.mark.parametrize("route", ["api", "websocket"])
def test_bad_parents_and_attachments_write_nothing_on_either_route(people, route):
    alice, bob, _, (room, other_room) = people
    elsewhere = services.message_send(user=bob, conversation_id=other_room, content="x")[0]
    bobs_upload = services.attachment_upload(user=bob, data=png(), name="b.png")
    send = services.message_send if route == "api" else websocket_send
    before = (Message.objects.count(), RealtimeEvent.objects.count())

    with pytest.raises(APIError) as parent_error:
        send(user=alice, conversation_id=room, content="r", parent_id=elsewhere.id)
    with pytest.raises(APIError) as attachment_error:
        send(user=alice, conversation_id=room, attachment_ids=[str(bobs_upload.id)])

    assert parent_error.value.code == "invalid_parent"
    assert attachment_error.value.code == "invalid_attachment"
    assert (Message.objects.count(), RealtimeEvent.objects.count()) == before
    assert Attachment.objects.get(id=bobs_upload.id).message_id is None
