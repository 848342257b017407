"""The messaging API in-process, on the real database."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from communication.exceptions import APIError
from communication.models import RealtimeEvent
from messaging import services
from messaging.models import Conversation, Message, MessageEdit, Participant
from messaging.services.conversations import direct_key
from messaging.services.offline import wants_notification
from messaging.tests.conftest import create_conversation, make_user, post_message

pytestmark = pytest.mark.django_db


def events(user, type_):
    return [e.payload for e in RealtimeEvent.objects.filter(user=user, type=type_).order_by("seq")]


def test_direct_conversation_is_unique_per_pair(as_user, alice, bob):
    a, b = as_user(alice), as_user(bob)
    first = a.post(
        "/api/v1/conversations", {"type": "direct", "participants": ["bob"]}, format="json"
    )
    assert first.status_code == 201
    body = first.json()
    assert body["type"] == "direct"
    assert sorted((p["user_id"], p["role"]) for p in body["participants"]) == [
        ("alice", "member"),
        ("bob", "member"),
    ]
    replay = a.post(
        "/api/v1/conversations/", {"type": "direct", "participants": ["bob"]}, format="json"
    )
    assert replay.status_code == 200 and replay.json()["id"] == body["id"]
    reverse = b.post(
        "/api/v1/conversations", {"type": "direct", "participants": ["alice"]}, format="json"
    )
    assert reverse.status_code == 200 and reverse.json()["id"] == body["id"]
    assert Conversation.objects.count() == 1
    # Bob was told he was added.
    assert events(bob, "participant.added")[0]["conversation_id"] == body["id"]


def test_direct_pair_unique_in_the_database(alice, bob):
    key = direct_key(alice, bob)
    Conversation.objects.create(type="direct", direct_key=key)
    with pytest.raises(IntegrityError), transaction.atomic():
        Conversation.objects.create(type="direct", direct_key=key)


def test_unknown_participant_is_400_unknown_user(as_user, alice):
    response = as_user(alice).post(
        "/api/v1/conversations", {"type": "group", "participants": ["nobody"]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_user"


def test_participant_known_only_to_the_identity_service_is_created(
    identity_provider, as_user, alice
):
    identity_provider.users["dave"] = {"sub": "dave", "email": "dave@example.com", "name": "Dave"}
    a = APIClient()
    a.credentials(HTTP_AUTHORIZATION=f"Bearer {identity_provider.token('alice')}")
    response = a.post(
        "/api/v1/conversations", {"type": "direct", "participants": ["dave"]}, format="json"
    )
    assert response.status_code == 201, response.content
    assert {p["user_id"] for p in response.json()["participants"]} == {"alice", "dave"}
    missing = a.post(
        "/api/v1/conversations", {"type": "group", "participants": ["ghost"]}, format="json"
    )
    assert missing.status_code == 400 and missing.json()["code"] == "unknown_user"


def test_post_message_renders_and_is_idempotent_on_client_id(as_user, alice, bob):
    a = as_user(alice)
    conv = create_conversation(a)
    client_id = str(uuid.uuid4())
    payload = {
        "content": "hi *there*",
        "client_id": client_id,
        "parent_id": None,
        "attachments": [],
    }
    first = a.post(f"/api/v1/conversations/{conv['id']}/messages", payload, format="json")
    assert first.status_code == 201
    body = first.json()
    assert body["conversation_id"] == conv["id"] and body["sender"] == "alice"
    assert body["content"] == "hi *there*" and body["html"] == "<p>hi <em>there</em></p>"
    assert body["sent_at"] and body["client_id"] == client_id
    again = a.post(f"/api/v1/conversations/{conv['id']}/messages/", payload, format="json")
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert Message.objects.filter(client_id=client_id).count() == 1
    # One message.created per participant, not two.
    assert len(events(bob, "message.created")) == 1
    assert events(bob, "message.created")[0]["client_id"] == client_id


def test_rendered_content_has_no_script_or_javascript_links(as_user, alice, bob):
    a = as_user(alice)
    conv = create_conversation(a)
    body = post_message(a, conv["id"], "<script>alert(1)</script> [x](javascript:alert(1))")
    assert "<script" not in body["html"] and "javascript:" not in body["html"].replace(
        "[x](javascript:alert(1))", ""
    )
    assert 'href="javascript' not in body["html"]


def test_non_participant_gets_404_everywhere(as_user, alice, bob, carol):
    a, c = as_user(alice), as_user(carol)
    conv = create_conversation(a)
    message = post_message(a, conv["id"])
    cid = conv["id"]
    assert c.get(f"/api/v1/conversations/{cid}").status_code == 404
    assert c.patch(f"/api/v1/conversations/{cid}", {"title": "x"}, format="json").status_code == 404
    assert c.get(f"/api/v1/conversations/{cid}/messages").status_code == 404
    assert (
        c.post(f"/api/v1/conversations/{cid}/messages", {"content": "x"}, format="json").status_code
        == 404
    )
    assert (
        c.put(f"/api/v1/messages/{message['id']}", {"content": "x"}, format="json").status_code
        == 404
    )
    assert c.delete(f"/api/v1/messages/{message['id']}").status_code == 404
    assert (
        c.post(
            f"/api/v1/conversations/{cid}/read", {"message_id": message["id"]}, format="json"
        ).status_code
        == 404
    )
    assert (
        c.post(
            f"/api/v1/conversations/{cid}/participants", {"user_id": "carol"}, format="json"
        ).status_code
        == 404
    )
    assert c.post(f"/api/v1/conversations/{cid}/leave").status_code == 404
    assert c.post(f"/api/v1/conversations/{cid}/mute", {}, format="json").status_code == 404
    unknown = uuid.uuid4()
    assert c.get(f"/api/v1/conversations/{unknown}").json()["code"] == "not_found"
    assert c.get("/api/v1/conversations").json()["results"] == []
    assert not RealtimeEvent.objects.filter(user=carol).exists()


def test_edit_keeps_the_audit_trail_and_respects_the_window(as_user, alice, bob, settings):
    a, b = as_user(alice), as_user(bob)
    conv = create_conversation(a)
    message = post_message(a, conv["id"], "first")
    assert (
        b.put(f"/api/v1/messages/{message['id']}", {"content": "x"}, format="json").status_code
        == 403
    )
    edited = a.put(
        f"/api/v1/messages/{message['id']}/", {"content": "second **bold**"}, format="json"
    )
    assert edited.status_code == 200
    assert (
        edited.json()["html"] == "<p>second <strong>bold</strong></p>"
        and edited.json()["edited_at"]
    )
    trail = list(MessageEdit.objects.filter(message_id=message["id"]))
    assert [(e.action, e.previous_content, e.edited_by_id) for e in trail] == [
        ("edit", "first", alice.pk)
    ]
    assert events(bob, "message.updated")[0]["content"] == "second **bold**"
    Message.objects.filter(id=message["id"]).update(sent_at=timezone.now() - dt.timedelta(hours=1))
    settings.MESSAGING_EDIT_WINDOW_SECONDS = 60
    late = a.put(f"/api/v1/messages/{message['id']}", {"content": "third"}, format="json")
    assert late.status_code == 403 and late.json()["code"] == "edit_window_closed"


def test_delete_leaves_a_tombstone_by_author_or_admin(as_user, alice, bob, carol):
    a, b, c = as_user(alice), as_user(bob), as_user(carol)
    conv = create_conversation(a, "group", ["bob", "carol"], title="Team")
    by_bob = post_message(b, conv["id"], "bob's")
    assert c.delete(f"/api/v1/messages/{by_bob['id']}").status_code == 403
    assert a.delete(f"/api/v1/messages/{by_bob['id']}").status_code == 204  # owner
    assert a.delete(f"/api/v1/messages/{by_bob['id']}/").status_code == 204  # idempotent
    row = Message.objects.get(id=by_bob["id"])
    assert row.deleted_at and row.content == "" and row.html == ""
    trail = MessageEdit.objects.get(message=row)
    assert (
        trail.action == "delete" and trail.previous_content == "bob's" and trail.edited_by == alice
    )
    listed = c.get(f"/api/v1/conversations/{conv['id']}/messages").json()["results"]
    assert (
        listed[-1]["id"] == by_bob["id"]
        and listed[-1]["deleted_at"]
        and listed[-1]["content"] == ""
    )
    assert events(carol, "message.deleted")[0]["id"] == by_bob["id"]
    assert (
        b.put(f"/api/v1/messages/{by_bob['id']}", {"content": "x"}, format="json").status_code
        == 409
    )


def test_receipts_and_unread_counts_follow_reads(as_user, alice, bob):
    a, b = as_user(alice), as_user(bob)
    conv = create_conversation(a)
    ids = [post_message(a, conv["id"], f"m{i}")["id"] for i in range(3)]
    row = b.get("/api/v1/conversations").json()["results"][0]
    assert row["unread"] == 3 and row["last_message"]["preview"] == "m2"
    assert a.get("/api/v1/conversations").json()["results"][0]["unread"] == 0
    read = b.post(f"/api/v1/conversations/{conv['id']}/read", {"message_id": ids[1]}, format="json")
    assert read.status_code == 200 and read.json()["read_up_to"] == ids[1]
    assert b.get("/api/v1/conversations").json()["results"][0]["unread"] == 1
    receipt = events(alice, "receipt")[-1]
    assert receipt == {
        "conversation_id": conv["id"],
        "user_id": "bob",
        "delivered_up_to": ids[1],
        "read_up_to": ids[1],
    }
    # An older read changes nothing and sends nothing.
    before = len(events(alice, "receipt"))
    b.post(f"/api/v1/conversations/{conv['id']}/read", {"message_id": ids[0]}, format="json")
    assert len(events(alice, "receipt")) == before
    # Fetching delivers: the watermark moves to the newest fetched message.
    b.get(f"/api/v1/conversations/{conv['id']}/messages")
    assert events(alice, "receipt")[-1]["delivered_up_to"] == ids[2]
    assert events(alice, "receipt")[-1]["read_up_to"] == ids[1]
    bad = b.post(f"/api/v1/conversations/{conv['id']}/read", {"message_id": 10**12}, format="json")
    assert bad.status_code == 400


def test_message_paging_before_after_and_threads(as_user, alice, bob):
    a = as_user(alice)
    conv = create_conversation(a)
    ids = [post_message(a, conv["id"], f"m{i}")["id"] for i in range(6)]
    reply = post_message(a, conv["id"], "in thread", parent_id=ids[1])
    nested = post_message(a, conv["id"], "reply to reply", parent_id=reply["id"])
    assert nested["parent_id"] == ids[1]  # threads are one level deep
    url = f"/api/v1/conversations/{conv['id']}/messages"
    page = a.get(url, {"limit": 3}).json()
    assert [m["id"] for m in page["results"]] == [ids[5], reply["id"], nested["id"]]
    assert page["has_more"] is True
    older = a.get(url, {"before": ids[5], "limit": 3}).json()
    assert [m["id"] for m in older["results"]] == ids[2:5]
    newer = a.get(url, {"after": ids[3], "limit": 2}).json()
    assert [m["id"] for m in newer["results"]] == ids[4:6] and newer["has_more"] is True
    thread = a.get(url, {"thread": ids[1]}).json()
    assert [m["id"] for m in thread["results"]] == [reply["id"], nested["id"]]
    assert a.get(url, {"before": 1, "after": 2}).status_code == 400


def test_participants_changes_write_system_messages(as_user, alice, bob, carol):
    a, b = as_user(alice), as_user(bob)
    conv = create_conversation(a, "group", ["bob"], title="Team")
    added = a.post(
        f"/api/v1/conversations/{conv['id']}/participants",
        {"user_id": "carol", "role": "member"},
        format="json",
    )
    assert added.status_code == 201 and added.json()["user_id"] == "carol"
    again = a.post(
        f"/api/v1/conversations/{conv['id']}/participants/", {"user_id": "carol"}, format="json"
    )
    assert again.status_code == 200
    assert (
        b.post(
            f"/api/v1/conversations/{conv['id']}/participants", {"user_id": "alice"}, format="json"
        ).status_code
        == 403
    )
    unknown = a.post(
        f"/api/v1/conversations/{conv['id']}/participants", {"user_id": "zed"}, format="json"
    )
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_user"
    assert events(carol, "participant.added")[0]["user_id"] == "carol"
    assert a.delete(f"/api/v1/conversations/{conv['id']}/participants/carol").status_code == 204
    assert events(carol, "participant.removed")[0]["user_id"] == "carol"
    assert as_user(carol).get(f"/api/v1/conversations/{conv['id']}").status_code == 404
    assert b.post(f"/api/v1/conversations/{conv['id']}/leave/").status_code == 204
    system = list(
        Message.objects.filter(conversation_id=conv["id"], type="system")
        .order_by("id")
        .values_list("content", flat=True)
    )
    assert system == ["Alice added Carol", "Alice removed Carol", "Bob left"]
    detail = a.get(f"/api/v1/conversations/{conv['id']}").json()
    assert [p["user_id"] for p in detail["participants"]] == ["alice"]


def test_update_title_and_metadata(as_user, alice, bob):
    a, b = as_user(alice), as_user(bob)
    conv = create_conversation(a, "group", ["bob"], title="Old")
    assert (
        b.patch(f"/api/v1/conversations/{conv['id']}", {"title": "x"}, format="json").status_code
        == 403
    )
    response = a.patch(
        f"/api/v1/conversations/{conv['id']}/",
        {"title": "New", "metadata": {"k": 1}},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["title"] == "New" and response.json()["metadata"] == {"k": 1}
    assert events(bob, "conversation.updated")[0]["title"] == "New"


def test_mute(as_user, alice, bob):
    b = as_user(bob)
    conv = create_conversation(as_user(alice))
    until = (timezone.now() + dt.timedelta(hours=1)).isoformat()
    response = b.post(f"/api/v1/conversations/{conv['id']}/mute", {"until": until}, format="json")
    assert response.status_code == 200 and response.json()["muted"] is True
    row = Participant.objects.get(user=bob)
    assert row.muted and row.muted_until is not None
    assert not wants_notification(row)
    forever = b.post(f"/api/v1/conversations/{conv['id']}/mute/", {"until": None}, format="json")
    assert forever.json() == {"conversation_id": conv["id"], "muted": True, "until": None}
    off = b.post(f"/api/v1/conversations/{conv['id']}/mute", {"muted": False}, format="json")
    assert off.json()["muted"] is False


def test_support_conversations_are_seen_by_their_assigned_agent(as_user, alice, agent, bob):
    a, g = as_user(alice), as_user(agent)
    conv = create_conversation(a, "support", [], title="Help")
    assert g.get(f"/api/v1/conversations/{conv['id']}").status_code == 404
    services.support_assign(conversation=Conversation.objects.get(id=conv["id"]), agent=agent)
    detail = g.get(f"/api/v1/conversations/{conv['id']}").json()
    assert detail["assigned_agent"] == "agent"
    assert {(p["user_id"], p["role"]) for p in detail["participants"]} == {
        ("alice", "owner"),
        ("agent", "agent"),
    }
    post_message(g, conv["id"], "How can I help?")
    with pytest.raises(APIError):
        services.support_assign(conversation=Conversation.objects.get(id=conv["id"]), agent=bob)
    other = make_user("agent2", roles=["support_agent"])
    services.support_assign(conversation=Conversation.objects.get(id=conv["id"]), agent=other)
    assert g.get(f"/api/v1/conversations/{conv['id']}").status_code == 404
    assert as_user(other).get(f"/api/v1/conversations/{conv['id']}").status_code == 200


def test_list_is_ordered_by_activity_and_paginated(as_user, alice):
    a = as_user(alice)
    ids = []
    for i in range(5):
        make_user(f"u{i}")
        ids.append(create_conversation(a, "direct", [f"u{i}"])["id"])
    post_message(a, ids[0], "bump")
    first = a.get("/api/v1/conversations", {"limit": 3}).json()
    assert [c["id"] for c in first["results"]] == [ids[0], ids[4], ids[3]]
    second = a.get(first["next"]).json()
    assert [c["id"] for c in second["results"]] == [ids[2], ids[1]]
    assert second["next"] is None


def _seed_conversations(alice, n, offset=0):
    for i in range(offset, offset + n):
        other = make_user(f"q{i}")
        conv, _ = services.conversation_create(
            user=alice, type="group", participants=[other.external_id, "bob"]
        )
        services.message_send(user=alice, conversation_id=conv.id, content=f"hello {i}")


def test_conversation_list_query_count_is_constant(
    as_user, alice, bob, django_assert_max_num_queries
):
    a = as_user(alice)
    _seed_conversations(alice, 2)
    a.get("/api/v1/conversations")  # warm the auth path
    with django_assert_max_num_queries(6) as few:
        assert len(a.get("/api/v1/conversations").json()["results"]) == 2
    budget = len(few.captured_queries)
    _seed_conversations(alice, 20, offset=2)
    with django_assert_max_num_queries(budget):
        assert len(a.get("/api/v1/conversations").json()["results"]) == 22


def test_message_list_query_count_is_bounded(as_user, alice, bob, django_assert_max_num_queries):
    a = as_user(alice)
    conv = create_conversation(a)
    for i in range(3):
        post_message(a, conv["id"], f"m{i}")
    a.get(f"/api/v1/conversations/{conv['id']}/messages")
    with django_assert_max_num_queries(10) as few:
        a.get(f"/api/v1/conversations/{conv['id']}/messages")
    budget = len(few.captured_queries)
    for i in range(30):
        post_message(a, conv["id"], f"n{i}")
    a.get(f"/api/v1/conversations/{conv['id']}/messages")
    with django_assert_max_num_queries(budget):
        assert len(a.get(f"/api/v1/conversations/{conv['id']}/messages").json()["results"]) == 33


def test_validation_errors(as_user, alice, bob):
    a = as_user(alice)
    assert a.post("/api/v1/conversations", {"type": "nope"}, format="json").status_code == 400
    assert (
        a.post(
            "/api/v1/conversations", {"type": "direct", "participants": []}, format="json"
        ).status_code
        == 400
    )
    conv = create_conversation(a)
    empty = a.post(f"/api/v1/conversations/{conv['id']}/messages", {"content": "  "}, format="json")
    assert empty.status_code == 400
    bad_parent = a.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        {"content": "x", "parent_id": 999999},
        format="json",
    )
    assert bad_parent.status_code == 400 and bad_parent.json()["code"] == "invalid_parent"
