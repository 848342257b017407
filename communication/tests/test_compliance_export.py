"""GET /api/v1/compliance/export/{user_id}: everything held about a person, streamed."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import pytest
from django.core.files.base import ContentFile
from rest_framework.test import APIClient

from analytics import events
from campaigns.models import StaticList, StaticListMember
from communication.models import AuditEntry, Category, User
from messaging import attachments
from messaging.models import Attachment, Conversation, Message, Participant
from notifications.models import Delivery, Notification, NotificationRequest, QuietHours

pytestmark = pytest.mark.django_db

APPS = {"communication", "notifications", "messaging", "campaigns", "analytics"}


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }


@pytest.fixture
def reader(make_service_token):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_service_token('dpo', scopes=['compliance:read'])}"
    )
    return client


@pytest.fixture
def dana():
    """A person with something in every app."""
    user = User.objects.create(
        username="dana",
        external_id="dana-42",
        email="dana.canary@example.com",
        phone="+33612345678",
        name="Dana Canary",
    )
    Category.objects.create(key="orders", name="Orders")
    request = NotificationRequest.objects.create(caller="service:shop", category_id="orders")
    notification = Notification.objects.create(
        request=request,
        user=user,
        recipient={"user_id": "dana-42"},
        category_id="orders",
        title="Parcel canary-title shipped",
    )
    Delivery.objects.create(
        notification=notification, channel="email", status="delivered", address=user.email
    )
    QuietHours.objects.create(user=user, start="22:00", end="07:00")
    conversation = Conversation.objects.create(type="group", created_by=user)
    Participant.objects.create(conversation=conversation, user=user)
    Message.objects.create(conversation=conversation, sender=user, content="canary message text")
    attachment = Attachment(
        uploader=user, content_type="text/plain", size=11, original_name="canary.txt"
    )
    attachment.file = attachments.storage().save(
        "attachments/dana/file.txt", ContentFile(b"canary file")
    )
    attachment.save()
    static = StaticList.objects.create(name="VIP")
    StaticListMember.objects.create(static_list=static, key="dana-42", user=user)
    events.record_many([{"type": "opened", "channel": "email", "user_id": user.pk}])
    return user


def _chunks(response) -> list[bytes]:
    return list(response.streaming_content)


def _read(response) -> dict:
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/json"
    return json.loads(b"".join(_chunks(response)))


def test_the_export_holds_the_persons_data_in_every_app(reader, dana):
    # Someone else's data stays out of it.
    User.objects.create(username="eve", external_id="eve", email="eve@example.com")

    body = _read(reader.get("/api/v1/compliance/export/dana-42"))

    assert set(body) == {"user_id", "generated_at", *APPS}
    assert body["user_id"] == "dana-42"
    (profile,) = body["communication"]["profile"]
    assert (profile["email"], profile["phone"], profile["name"]) == (
        "dana.canary@example.com",
        "+33612345678",
        "Dana Canary",
    )
    (notification,) = body["notifications"]["notifications"]
    assert notification["title"] == "Parcel canary-title shipped"
    assert [d["status"] for d in body["notifications"]["deliveries"]] == ["delivered"]
    assert body["notifications"]["quiet_hours"][0]["start"] == "22:00:00"
    assert [m["content"] for m in body["messaging"]["messages"]] == ["canary message text"]
    assert len(body["campaigns"]["list_members"]) == 1
    assert [e["type"] for e in body["analytics"]["events"]] == ["opened"]
    assert "eve@example.com" not in json.dumps(body)

    # The attachment comes as a link made for the person, which downloads the file.
    (attachment,) = body["messaging"]["attachments"]
    assert attachment["original_name"] == "canary.txt"
    link = urlsplit(attachment["url"])
    download = APIClient().get(f"{link.path}?{link.query}")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"canary file"

    entry = AuditEntry.objects.get(action="compliance.export")
    assert (entry.object_id, entry.actor) == ("dana-42", "service:dpo")
    assert "dana.canary" not in json.dumps(entry.changes)


def test_many_rows_are_streamed_in_several_chunks(reader, dana):
    conversation = Message.objects.get(sender=dana).conversation
    Message.objects.bulk_create(
        Message(conversation=conversation, sender=dana, content=f"{uuid.uuid4()} " * 40)
        for _ in range(300)
    )
    response = reader.get("/api/v1/compliance/export/dana-42")
    chunks = _chunks(response)
    assert len(chunks) > 2
    assert len(json.loads(b"".join(chunks))["messaging"]["messages"]) == 301


def test_an_unknown_user_is_404_and_nothing_is_recorded(reader):
    response = reader.get("/api/v1/compliance/export/nobody")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_user"
    assert not AuditEntry.objects.filter(action="compliance.export").exists()


def test_the_scope_is_required(make_service_token, dana):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('shop')}")
    response = client.get("/api/v1/compliance/export/dana-42")
    assert response.status_code == 403
    assert response.json()["code"] == "scope_missing"
