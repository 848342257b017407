"""Messages, their metadata and their edit trail are ciphertext in their columns on every write
path (the API's send and its replay, system messages, edits, deletions, erasure) and read back as
what was written; the migration encrypts the rows that were there before it. The websocket's
send (the same statement, from the event loop) is checked where the event loop's committed rows
are already written: ``test_message_write``."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from communication.compliance import registry
from communication.compliance.apply import erase_queryset
from communication.compliance.registry import Subject
from communication.fields import VERSION
from communication.models import RealtimeEvent
from conftest import assert_encrypted, before_migration, stored
from messaging import services
from messaging.models import Message, MessageEdit
from messaging.tests.conftest import create_conversation, make_user, post_message

pytestmark = pytest.mark.django_db

SECRET = "the launch code is *tangerine*"
RENDERED = "<em>tangerine</em>"
NOTE = {"quote": "tangerine"}


def _api_send(alice, bob, as_user):
    conv = create_conversation(as_user(alice))
    sent = post_message(as_user(alice), conv["id"], SECRET, client_id="c1", metadata=NOTE)
    # A replay reads the first message back from the statement's raw row.
    again = post_message(as_user(alice), conv["id"], "other", client_id="c1")
    assert (again["id"], again["content"], again["metadata"]) == (sent["id"], SECRET, NOTE)
    message = Message.objects.get(id=sent["id"])
    # Each member's message.created event, written by the same statement: its payload sealed,
    # only the ids in the clear, and replayed as the live copy was.
    events = list(RealtimeEvent.objects.filter(type="message.created", data__id=sent["id"]))
    assert {e.user_id for e in events} == {alice.pk, bob.pk}
    for event in events:
        assert set(event.data) == {"id", "parent_id", "attachments"}
        assert event.payload["content"] == SECRET and event.payload["metadata"] == NOTE
    return [
        (message, "content", SECRET),
        (message, "html", RENDERED),
        (message, "metadata", "tangerine"),
        *((event, "sealed", "tangerine") for event in events),
    ]


def _system(alice, bob, as_user):
    conv = create_conversation(as_user(alice))
    with transaction.atomic():
        message = services.system_message_send(conv["id"], alice, SECRET, quote="tangerine")
    return [(message, "content", SECRET), (message, "metadata", "tangerine")]


def _edit(alice, bob, as_user):
    conv = create_conversation(as_user(alice))
    sent = post_message(as_user(alice), conv["id"], SECRET, metadata=NOTE)
    message = services.message_edit(user=alice, message_id=sent["id"], content="now *plum*")
    trail = MessageEdit.objects.get(message=message)
    return [
        (message, "content", "now *plum*"),
        (message, "html", "<em>plum</em>"),
        (trail, "previous_content", SECRET),
        (trail, "previous_metadata", "tangerine"),
    ]


def _delete(alice, bob, as_user):
    conv = create_conversation(as_user(alice))
    sent = post_message(as_user(alice), conv["id"], SECRET, metadata=NOTE)
    message = services.message_delete(user=alice, message_id=sent["id"])
    trail = MessageEdit.objects.get(message=message)
    return [
        (message, "content", ""),
        (message, "html", ""),
        (trail, "previous_content", SECRET),
        (trail, "previous_metadata", "tangerine"),
    ]


def _erasure(alice, bob, as_user):
    conv = create_conversation(as_user(alice))
    sent = post_message(as_user(alice), conv["id"], SECRET, metadata=NOTE)
    entry = registry.get("messaging.messages")
    subject = Subject(users=(alice.pk,))
    assert erase_queryset(entry, entry.queryset(subject)) == 1
    assert erase_queryset(entry, entry.queryset(subject)) == 0  # the tombstone is done
    message = Message.objects.get(id=sent["id"])
    assert message.deleted_at and (message.content, message.metadata) == ("", {})
    return [(message, "content", ""), (message, "html", ""), (message, "metadata", "")]


@pytest.mark.parametrize(
    "write",
    [
        _api_send,
        _system,
        _edit,
        _delete,
        _erasure,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_every_write_path_stores_ciphertext(write, as_user):
    alice, bob = make_user("alice"), make_user("bob")
    for obj, field, plaintext in write(alice, bob, as_user):
        assert_encrypted(obj, field, plaintext)
        assert SECRET.encode() not in stored(type(obj), field, obj.pk)


def test_the_migration_encrypts_existing_rows():
    alice = make_user("alice")
    conversation = services.conversation_create(user=alice, type="group", participants=[])[0]
    with before_migration("messaging", "0005_encrypt_messages"), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO messaging_message (conversation_id, sender_id, type, content, html, "
            "metadata, client_id, sent_at) VALUES (%s, %s, 'text', %s, %s, %s, '', now()) "
            "RETURNING id",
            [conversation.pk, alice.pk, SECRET, RENDERED, '{"quote": "tangerine"}'],
        )
        (message_id,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO messaging_messageedit (message_id, action, previous_content, "
            "previous_metadata, edited_at) VALUES (%s, 'edit', %s, %s, now()) RETURNING id",
            [message_id, SECRET, '{"quote": "tangerine"}'],
        )
        (edit_id,) = cursor.fetchone()

    message, edit = Message.objects.get(id=message_id), MessageEdit.objects.get(id=edit_id)
    assert (message.content, message.html, message.metadata) == (SECRET, RENDERED, NOTE)
    assert (edit.previous_content, edit.previous_metadata) == (SECRET, NOTE)
    for obj, field in [(message, "content"), (message, "metadata"), (edit, "previous_content")]:
        raw = stored(type(obj), field, obj.pk)
        assert raw is not None and raw[:1] == VERSION and b"tangerine" not in raw
