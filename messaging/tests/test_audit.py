"""The audit trail of messaging: a conversation's creation and membership, message edits and
deletions, each one entry naming the user who acted, never the text; a change that rolls back
leaves none; sending a message writes no entry."""

from __future__ import annotations

import json

import pytest
from django.db import transaction

from communication.models import AuditEntry
from messaging import services
from messaging.tests.conftest import create_conversation, post_message

pytestmark = pytest.mark.django_db

SECRET = "meet me at the old mill at noon"


def test_membership_and_message_changes_are_recorded_by_user(as_user, alice, bob, carol):
    a = as_user(alice)
    conv = create_conversation(a, "group", participants=("bob",), title="Mill plans")
    added = a.post(
        f"/api/v1/conversations/{conv['id']}/participants", {"user_id": "carol"}, format="json"
    )
    assert added.status_code == 201, added.content
    assert a.delete(f"/api/v1/conversations/{conv['id']}/participants/carol").status_code == 204
    assert as_user(bob).post(f"/api/v1/conversations/{conv['id']}/leave").status_code == 204
    before = AuditEntry.objects.count()
    message = post_message(a, conv["id"], "first words")
    assert AuditEntry.objects.count() == before  # a send is an event, not an audit entry
    edited = a.put(f"/api/v1/messages/{message['id']}", {"content": SECRET}, format="json")
    assert edited.status_code == 200, edited.content
    assert a.delete(f"/api/v1/messages/{message['id']}").status_code == 204

    entries = list(AuditEntry.objects.order_by("id"))
    assert [(e.action, e.actor) for e in entries] == [
        ("conversation.create", "user:alice"),
        ("participant.add", "user:alice"),
        ("participant.remove", "user:alice"),
        ("participant.leave", "user:bob"),
        ("message.edit", "user:alice"),
        ("message.delete", "user:alice"),
    ]
    create, add = entries[0], entries[1]
    assert create.object_type == "messaging.conversation" and create.object_id == conv["id"]
    assert create.changes == {
        "type": "group",
        "participants": ["alice", "bob"],
        "title": "changed",
    }
    assert add.changes == {"conversation": conv["id"], "user": "carol", "role": "member"}
    edit = entries[4]
    assert (edit.object_type, edit.object_id) == ("messaging.message", str(message["id"]))
    assert edit.changes == {"conversation": conv["id"], "content": "changed"}
    everything = json.dumps([e.changes for e in entries])
    assert SECRET not in everything and "first words" not in everything
    assert "Mill plans" not in everything


def test_an_edit_that_rolls_back_leaves_no_entry(as_user, alice, bob):
    a = as_user(alice)
    conv = create_conversation(a)
    message = post_message(a, conv["id"], "hello")
    with pytest.raises(RuntimeError), transaction.atomic():
        services.message_edit(user=alice, message_id=message["id"], content=SECRET)
        raise RuntimeError
    assert not AuditEntry.objects.filter(action="message.edit").exists()
