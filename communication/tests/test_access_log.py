"""Access logging: staff opening a conversation's transcript, a message, or a notification's
content in the console, and a service reading a conversation with a token issued to act for its
user, each leave exactly one audit entry naming who read what; a user reading their own
conversation leaves none. The entries are listed and filtered in the audit console and the
audit API."""

from __future__ import annotations

import jwt
import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from communication import content_access
from communication.auth import keys, tokens
from communication.models import AuditEntry, User
from messaging import services as messaging
from messaging.models import MessageEdit
from messaging.tests.conftest import make_user
from messaging.tests.test_admin import png_bytes, sample_conversation
from notifications import services as notifications
from notifications.models import OutboxMessage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }


@pytest.fixture(autouse=True)
def _nothing_consumes_the_queues(settings):
    settings.CELERY_QUEUE_PREFIX = "void-"


@pytest.fixture
def staff(client) -> Client:
    admin = User.objects.create_superuser("ops", "ops@example.com", "pw", name="Olga Ops")
    client.force_login(admin)
    return client


def accesses(action: str | None = None) -> list[AuditEntry]:
    actions = [action] if action else list(content_access.ACTIONS)
    return list(AuditEntry.objects.filter(action__in=actions).order_by("id"))


def acting_token(user: User, service: str) -> str:
    """The user's token as the identity service issues it to a service acting for them (RFC 8693
    token exchange: the ``act`` claim names the acting client)."""
    claims = jwt.decode(tokens.issue_user_token(user), options={"verify_signature": False})
    claims["act"] = {"sub": service}
    return keys.dev_sign(claims)


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


# ----------------------------------------------------------------------------------- console


def test_staff_opening_a_transcript_leaves_one_entry_naming_them(staff):
    sample = sample_conversation()
    conversation = sample.conversation
    assert accesses() == []
    page = staff.get(f"/admin/messaging/conversation/{conversation.pk}/change/")
    assert page.status_code == 200 and "Tuesday works for me" in page.content.decode()

    [entry] = accesses()
    assert (entry.action, entry.actor) == ("conversation.viewed", "staff:ops")
    assert (entry.object_type, entry.object_id) == ("messaging.conversation", str(conversation.pk))
    # One entry for the page, however many messages it showed; no text in it.
    assert entry.changes == {"messages": len(sample.in_order), "before": None}
    assert "Tuesday" not in str(entry.changes)

    # The list of conversations shows no transcript: no entry.
    assert staff.get("/admin/messaging/conversation/").status_code == 200
    assert len(accesses()) == 1


def test_a_transcript_is_not_shown_when_its_access_entry_cannot_be_written(staff):
    """Fail closed: content shown without its record is what the log exists to prevent."""
    sample = sample_conversation()
    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute(
            "CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit table refuses the entry'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_views BEFORE INSERT ON communication_auditentry FOR EACH ROW "
            "WHEN (NEW.action = 'conversation.viewed') EXECUTE FUNCTION pg_temp.refuse()"
        )
    staff.raise_request_exception = False
    page = staff.get(f"/admin/messaging/conversation/{sample.conversation.pk}/change/")
    assert page.status_code == 500
    assert "Tuesday works for me" not in page.content.decode()


def test_staff_opening_a_message_or_its_edit_trail_leaves_an_entry_each(staff):
    sample = sample_conversation()
    edit = MessageEdit.objects.get(message=sample.edited, action=MessageEdit.Action.EDIT)
    assert staff.get(f"/admin/messaging/message/{sample.edited.id}/change/").status_code == 200
    assert staff.get(f"/admin/messaging/messageedit/{edit.id}/change/").status_code == 200

    entries = accesses()
    assert [(e.action, e.actor, e.object_id) for e in entries] == [
        ("message.viewed", "staff:ops", str(sample.edited.id)),
        ("message.viewed", "staff:ops", str(sample.edited.id)),
    ]
    assert entries[1].changes == {"conversation": str(sample.conversation.pk), "edit": edit.id}


def test_staff_opening_a_notifications_content_leaves_one_entry_per_page(staff, make_user_token):
    make_user_token("cust-1", email="cust1@example.com")
    outcome = notifications.notification_send(
        caller="billing",
        payload={
            "recipients": [{"user_id": "cust-1"}],
            "category": "alerts",
            "channels": ["email", "in_app"],
            "content": {"subject": "Your invoice", "title": "Invoice", "body": "Invoice 42"},
            "data": {},
        },
    )
    [sent] = outcome.body["notifications"]
    notification_id = sent["id"]
    for delivery in sent["deliveries"]:
        notifications.delivery_attempt(delivery["id"])
    outbox = OutboxMessage.objects.get(delivery__notification_id=notification_id)

    pages = [
        f"/admin/notifications/notification/{notification_id}/change/",
        f"/admin/notifications/notification/{notification_id}/timeline/",
        f"/admin/notifications/outboxmessage/{outbox.pk}/change/",
    ]
    for url in pages:
        assert staff.get(url).status_code == 200, url
    entries = accesses("notification.content_viewed")
    assert [(e.actor, e.object_type, e.object_id, e.changes["view"]) for e in entries] == [
        ("staff:ops", "notifications.notification", notification_id, "notification"),
        ("staff:ops", "notifications.notification", notification_id, "timeline"),
        ("staff:ops", "notifications.notification", notification_id, "outbox"),
    ]
    request_page = f"/admin/notifications/notificationrequest/{outcome.body['request_id']}/change/"
    assert staff.get(request_page).status_code == 200
    last = accesses("notification.content_viewed")[-1]
    assert (last.object_type, last.object_id) == (
        "notifications.notificationrequest",
        str(outcome.body["request_id"]),
    )
    # The lists show no content beyond a headline: no entries.
    for url in ("/admin/notifications/notification/", "/admin/notifications/outboxmessage/"):
        assert staff.get(url).status_code == 200
    assert len(accesses()) == 4


# ---------------------------------------------------------------------------------------- API


def test_a_service_reading_for_a_user_leaves_one_entry_naming_the_service():
    alice, bob, _ = make_user("alice"), make_user("bob"), make_user("carol")
    conversation, _ = messaging.conversation_create(user=alice, type="direct", participants=["bob"])
    for text in ("one", "two", "three"):
        messaging.message_send(user=bob, conversation_id=conversation.pk, content=text)
    url = f"/api/v1/conversations/{conversation.pk}/messages"

    own = bearer(tokens.issue_user_token(alice)).get(url)
    assert own.status_code == 200 and len(own.json()["results"]) == 3
    assert accesses() == []  # the user reading their own conversation

    assistant = bearer(acting_token(alice, "assistant"))
    read = assistant.get(url)
    assert read.status_code == 200 and len(read.json()["results"]) == 3
    [entry] = accesses()
    assert (entry.action, entry.actor) == ("conversation.read_by_service", "service:assistant")
    assert (entry.object_type, entry.object_id) == ("messaging.conversation", str(conversation.pk))
    assert entry.changes == {"on_behalf_of": "alice", "what": "messages", "messages": 3}

    message_id = read.json()["results"][0]["id"]
    assert assistant.get(f"/api/v1/messages/{message_id}").status_code == 200
    assert assistant.get(f"/api/v1/conversations/{conversation.pk}").status_code == 200
    listed = assistant.get("/api/v1/conversations")
    assert listed.status_code == 200
    entries = accesses()[1:]
    assert [(e.object_type, e.object_id, e.changes["what"]) for e in entries] == [
        ("messaging.conversation", str(conversation.pk), "message"),
        ("messaging.conversation", str(conversation.pk), "conversation"),
        ("communication.user", "alice", "conversation list"),
    ]
    assert entries[-1].changes["conversations"] == [str(conversation.pk)]
    assert {e.actor for e in entries} == {"service:assistant"}

    # A sent attachment's links, read for the user, name its conversation too.
    image = messaging.attachment_upload(user=bob, data=png_bytes(), name="plan.png")
    messaging.message_send(
        user=bob, conversation_id=conversation.pk, content="see", attachment_ids=[image.id]
    )
    assert assistant.get(f"/api/v1/attachments/{image.id}").status_code == 200
    last = accesses()[-1]
    assert (last.object_id, last.changes["what"], last.changes["attachment"]) == (
        str(conversation.pk),
        "attachment",
        str(image.id),
    )

    # Refused reads leave nothing: a conversation the user is not in.
    other, _ = messaging.conversation_create(user=bob, type="direct", participants=["carol"])
    before = len(accesses())
    assert assistant.get(f"/api/v1/conversations/{other.pk}/messages").status_code == 404
    assert len(accesses()) == before


def test_an_act_claim_naming_the_user_themself_is_not_a_service():
    alice = make_user("alice")
    assert content_access.acting_service({"sub": "alice", "act": {"sub": "alice"}}) is None
    assert content_access.acting_service({"sub": "alice", "act": "assistant"}) is None
    assert content_access.acting_service({"sub": "alice"}) is None
    assert content_access.acting_service({"sub": "alice", "act": {"sub": "bot"}}) == "service:bot"
    assert alice.external_id == "alice"


# ------------------------------------------------------------------------ the audit console/API


def test_the_audit_console_and_api_list_and_filter_access_entries(staff, make_service_token):
    sample = sample_conversation()
    alice = User.objects.get(external_id="alice")
    assert (
        staff.get(f"/admin/messaging/conversation/{sample.conversation.pk}/change/").status_code
        == 200
    )
    url = f"/api/v1/conversations/{sample.conversation.pk}/messages"
    assert bearer(acting_token(alice, "assistant")).get(url).status_code == 200
    viewed, by_service = accesses()

    console = staff.get("/admin/communication/auditentry/", {"action": "conversation.viewed"})
    text = console.content.decode()
    assert console.status_code == 200
    assert f"/admin/communication/auditentry/{viewed.id}/change/" in text
    assert f"/admin/communication/auditentry/{by_service.id}/change/" not in text
    assert "staff:ops" in text
    detail = staff.get(f"/admin/communication/auditentry/{by_service.id}/change/")
    assert detail.status_code == 200 and "service:assistant" in detail.content.decode()

    api = bearer(make_service_token("auditor", scopes=("compliance:read",)))
    found = api.get("/api/v1/compliance/audit", {"action": "conversation.read_by_service"})
    assert found.status_code == 200, found.content
    assert [(r["id"], r["actor"], r["object_id"]) for r in found.json()["results"]] == [
        (by_service.id, "service:assistant", str(sample.conversation.pk))
    ]
    mine = api.get(
        "/api/v1/compliance/audit", {"actor": "staff:ops", "action": "conversation.viewed"}
    )
    assert [r["id"] for r in mine.json()["results"]] == [viewed.id]
