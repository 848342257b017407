"""The erasure API's contract and refusals, erasure by address, batching, and the worker path."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from campaigns.models import Campaign, CampaignRecipient, CampaignRun, CampaignStep
from campaigns.services.lists import address_key
from communication.auth import tokens
from communication.compliance import apply, erasure
from communication.compliance.keyed import lookup_hash
from communication.models import ErasureRequest, RealtimeEvent, User
from conftest import held_open, wait_for
from messaging import services as messaging_services
from messaging.models import Participant
from notifications import services as notification_services
from notifications.models import Delivery, Notification, Suppression, suppression_hash

ERASURE = "/api/v1/compliance/erasure"


@pytest.fixture
def manager():
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION="Bearer "
        + tokens.issue_service_token("dpo", ["compliance:manage", "notifications:send"])
    )
    return client


def send_to_email(client, address: str) -> dict:
    response = client.post(
        "/api/v1/notifications",
        {
            "recipients": [{"email": address}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Hi", "body": "Hello."},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()["notifications"][0]["deliveries"][0]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_subject"),
        ({"user_id": "a", "email": "a@example.com"}, "invalid_subject"),
        ({"email": "not-an-address"}, "invalid_email"),
        ({"phone": "12"}, "invalid_phone"),
        ({"user_id": ""}, "invalid_subject"),
        ({"user_id": 42}, "invalid_subject"),
        ({"user_id": "x" * 100_000}, "too_long"),
        ({"email": "a\x00b@example.com"}, "validation_error"),
        ({"name": "alice"}, "invalid_subject"),
        (["user_id"], "invalid_subject"),
    ],
)
def test_bad_requests_are_refused_with_a_code(manager, body, code):
    response = manager.post(ERASURE, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert ErasureRequest.objects.count() == 0


@pytest.mark.django_db
def test_the_scope_is_required(make_service_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token()}")
    assert client.post(ERASURE, {"user_id": "a"}, format="json").json()["code"] == "scope_missing"
    assert client.get(f"{ERASURE}/{'0' * 8}-0000-0000-0000-{'0' * 12}").status_code == 403


@pytest.mark.django_db
def test_an_address_is_erased_and_stays_suppressed(manager):
    first = send_to_email(manager, "Someone@Example.com")
    Suppression.objects.create(
        channel="email", address="someone@example.com", reason="complaint", detail="abuse"
    )
    response = manager.post(ERASURE, {"email": " SOMEONE@example.com "}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["subject"] == "someone@example.com" and body["already_erased"] is False
    assert body["erased"]["notifications.notifications"] == 1
    assert body["erased"]["notifications.deliveries"] == 1
    assert body["erased"]["notifications.suppressions"] == 1
    # It was suppressed already (by complaint): that entry stays, without its address.
    assert body["erased"]["notifications.erased_addresses"] == 0
    assert not Notification.objects.filter(email_hash=lookup_hash("someone@example.com")).exists()
    assert [n.email for n in Notification.objects.all()] == [""]
    assert Delivery.objects.get(id=first["id"]).address == ""
    (entry,) = Suppression.objects.all()
    assert (entry.address, entry.detail, entry.reason) == (None, "", "complaint")
    assert entry.address_hash == suppression_hash("someone@example.com")
    assert str(entry) == "email:[erased] (complaint)"
    assert send_to_email(manager, "someone@example.com")["status"] == "suppressed"


@pytest.mark.django_db
def test_a_phone_never_suppressed_is_suppressed_by_hash_alone(manager):
    User.objects.create(username="p", external_id="p", phone="+33612345678", email="p@example.com")
    response = manager.post(ERASURE, {"phone": "+33 6 12 34 56 78"}, format="json")
    body = response.json()
    assert body["subject"] == "+33612345678"
    assert body["erased"]["communication.profile"] == 1
    # The user's email and phone are both theirs: both are suppressed, by hash only.
    assert body["erased"]["notifications.erased_addresses"] == 2
    assert set(Suppression.objects.values_list("channel", "address", "reason")) == {
        ("email", None, "erased"),
        ("sms", None, "erased"),
    }
    assert Suppression.objects.filter(address_hash=suppression_hash("+33612345678")).exists()
    again = manager.post(ERASURE, {"phone": "+33612345678"}, format="json").json()
    assert again["already_erased"] is True and not any(again["erased"].values())


@pytest.mark.django_db
def test_rows_are_erased_in_batches_with_per_row_values(manager, monkeypatch):
    monkeypatch.setattr(apply, "BATCH", 2)
    for _ in range(5):
        send_to_email(manager, "many@example.com")
    campaign = Campaign.objects.create(name="c", category_id="alerts", channels=["email"])
    step = CampaignStep.objects.create(campaign=campaign, position=0)
    for i in range(3):
        run = CampaignRun.objects.create(campaign=campaign, slot=f"2026-01-0{i + 1}T00:00:00Z")
        CampaignRecipient.objects.create(
            run=run, step=step, key=address_key("many@example.com"), email="many@example.com"
        )
    done = erasure.erase("email", "many@example.com", requested_by="test")
    assert done.erased["notifications.notifications"] == 5
    assert done.erased["campaigns.recipients"] == 3
    keys = set(CampaignRecipient.objects.values_list("pk", "key"))
    assert keys == {(pk, f"erased:{pk}") for pk, _ in keys}


@pytest.mark.django_db
def test_the_console_shows_an_erased_suppression(admin_client):
    notification_services.suppression_add(channel="email", address="x@example.com", reason="manual")
    erasure.erase("email", "x@example.com", requested_by="test")
    page = admin_client.get("/admin/notifications/suppression/")
    assert page.status_code == 200
    assert "[erased]" in page.content.decode() and "x@example.com" not in page.content.decode()
    # Staff still find it by the address they know: the hash matches.
    found = admin_client.get("/admin/notifications/suppression/", {"q": "X@example.com"})
    assert "[erased]" in found.content.decode()
    suppression = Suppression.objects.get()
    detail = admin_client.get(f"/admin/notifications/suppression/{suppression.pk}/change/")
    assert detail.status_code == 200 and "[erased]" in detail.content.decode()
    # Shown once, as "[erased]": not also as the raw (blank) field with its help text.
    assert "email (lower-cased) or E.164 number" not in detail.content.decode()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_large_erasure_runs_on_the_worker(celery_worker, manager, settings):
    settings.ERASURE_SYNC_MAX_ROWS = 0
    User.objects.create(username="big", external_id="big", email="big@example.com")
    response = manager.post(ERASURE, {"user_id": "big"}, format="json")
    assert response.status_code == 202, response.content
    url = response.json()["status_url"]
    assert url.startswith("http://testserver/api/v1/compliance/erasure/")
    path = url.removeprefix("http://testserver")

    def finished():
        body = manager.get(path).json()
        return body if "erased" in body else None

    body = wait_for(finished, 30, what="the worker's erasure")
    assert body["erased"]["communication.profile"] == 1 and body["already_erased"] is False
    assert body["subject"] is None  # the record keeps the identifier's hash alone
    assert not User.objects.filter(external_id="big").exists()


@pytest.mark.django_db
def test_the_offline_notifications_others_got_lose_the_persons_words():
    alice = User.objects.create(username="al", external_id="al", name="Alicename")
    bob = User.objects.create(username="bo", external_id="bo", name="Bob")
    conversation, _ = messaging_services.conversation_create(
        user=alice, type="direct", participants=["bo"]
    )
    messaging_services.message_send(
        user=alice, conversation_id=conversation.id, content="secret words"
    )
    participant = Participant.objects.get(conversation=conversation, user=bob)
    assert messaging_services.participant_notify_offline(participant.id) == "sent"
    notification = Notification.objects.get(user=bob)
    assert "Alicename" in notification.title and "secret words" in notification.body
    assert RealtimeEvent.objects.filter(user=bob, type="notification.created").exists()
    done = erasure.erase("user_id", "al", requested_by="test")
    assert done.erased["messaging.offline_notifications"] == 1
    notification.refresh_from_db()
    assert (notification.title, notification.body) == ("", "")
    assert notification.data["conversation_id"] == str(conversation.id)
    assert not RealtimeEvent.objects.filter(user=bob, type="notification.created").exists()


@pytest.mark.django_db
def test_what_has_not_gone_yet_never_goes_and_shared_content_stays(manager):
    response = manager.post(
        "/api/v1/notifications",
        {
            "recipients": [{"email": "later@example.com"}, {"email": "other@example.com"}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Soon", "body": "Hello {{ x }}."},
            "data": {"x": "shared"},
            "scheduled_at": "2099-01-01T00:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    done = erasure.erase("email", "later@example.com", requested_by="test")
    assert done.erased["notifications.pending_deliveries"] == 1
    mine = Delivery.objects.get(notification__email_hash="", address_hash="")
    assert (mine.address, mine.notification.email) == ("", "")
    assert mine.status == "cancelled" and mine.cancelled_at
    theirs = Delivery.objects.get(address_hash=lookup_hash("other@example.com"))
    assert theirs.status == "scheduled"
    # The request was to two people: its content is the other recipient's too, and stays.
    assert done.erased["notifications.requests"] == 0
    assert theirs.notification.request.data == {"x": "shared"}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_busy_row_fails_the_erasure_with_503_and_the_same_request_then_finishes(manager):
    delivery = send_to_email(manager, "busy@example.com")
    # Another transaction holds the delivery's row: the batch waits its lock timeout, not for
    # ever, and the caller is told to come back.
    with held_open(
        "SELECT 1 FROM notifications_delivery WHERE id = %s FOR UPDATE", [delivery["id"]]
    ):
        response = manager.post(ERASURE, {"email": "busy@example.com"}, format="json")
        assert response.status_code == 503, response.content
        assert response.json()["code"] == "erasure_failed"
        assert ErasureRequest.objects.get().status == ErasureRequest.Status.FAILED
    response = manager.post(ERASURE, {"email": "busy@example.com"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["erased"]["notifications.deliveries"] == 1
    assert Delivery.objects.get(id=delivery["id"]).address == ""
