"""Encryption at rest of the send pipeline's rows: each write path (the API's send through
``rows.insert_all``, the worker's claim and outcomes, the outbox, the bulk accept's set-based
insert and its fan-out, the sweep's release, provider webhooks, erasure) leaves ciphertext in
every encrypted column, read back as written; look-ups go through the keyed hashes."""

from __future__ import annotations

import datetime as dt
import inspect
import uuid

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from communication.compliance import erasure
from communication.compliance.keyed import lookup_hash
from communication.models import User
from conftest import assert_encrypted, before_migration, stored
from notifications import services
from notifications.models import (
    BulkRecipient,
    Delivery,
    Device,
    IdempotencyKey,
    Notification,
    NotificationRequest,
    OutboxMessage,
)
from notifications.services import bulk
from notifications.tests.test_webhooks import twilio_post, twilio_status

pytestmark = pytest.mark.django_db

SECRET = "Ssh-7f3a"  # in every text sent, so that a plaintext copy anywhere is found
CONTENT = {
    "subject": f"Subject {SECRET}",
    "title": f"Title {SECRET}",
    "body": f"Body {SECRET} {{{{ code }}}}",
    "html": f"<p>Html {SECRET}</p>",
}


def send(client, recipients, channels, **extra):
    headers = {}
    if "key" in extra:
        headers["HTTP_IDEMPOTENCY_KEY"] = extra.pop("key")
    body = {
        "recipients": recipients,
        "category": "alerts",
        "channels": channels,
        "content": CONTENT,
        "data": {"code": f"code-{SECRET}"},
        **extra,
    }
    response = client.post("/api/v1/notifications", body, format="json", **headers)
    assert response.status_code == 202, response.content
    return response.json()


def attempt_all(answer) -> list[Delivery]:
    ids = [d["id"] for n in answer["notifications"] for d in n["deliveries"]]
    services.deliveries_attempt(ids)
    return list(Delivery.objects.filter(id__in=ids).order_by("channel"))


def check_pipeline(request_id) -> None:
    """Every encrypted column of a request's rows: ciphertext, read back as written."""
    request = NotificationRequest.objects.get(id=request_id)
    assert_encrypted(request, "content", SECRET)
    assert_encrypted(request, "data", SECRET)
    notifications = list(Notification.objects.filter(request=request))
    assert notifications
    for n in notifications:
        for name in ("recipient", "email", "phone", "title", "body", "data"):
            assert_encrypted(n, name)
        assert_encrypted(n, "data", SECRET)
        if n.email:
            assert_encrypted(n, "email", n.email)
            assert n.email_hash == lookup_hash(n.email)
        if n.phone:
            assert_encrypted(n, "phone", n.phone)
            assert n.phone_hash == lookup_hash(n.phone)
        if n.title:
            assert_encrypted(n, "title", SECRET)
        for d in n.deliveries.all():
            assert_encrypted(d, "address", d.address or None)
            assert_encrypted(d, "device_results")
            assert_encrypted(d, "error", d.error or None)  # the sent statement's blank too
            assert d.address_hash == (lookup_hash(d.address) if d.address else "")
            for m in OutboxMessage.objects.filter(delivery=d):
                assert_encrypted(m, "to", m.to)
                assert m.to_hash == lookup_hash(m.to)
                for name in ("subject", "text", "html", "payload"):
                    assert_encrypted(m, name)
                assert_encrypted(m, "text", SECRET)


def single_send(sender, alice) -> None:
    Device.objects.create(user=alice, platform="android", token=f"token-{SECRET}")
    answer = send(
        sender,
        [{"user_id": "alice"}, {"email": "Raw@Example.com"}, {"phone": "+33611111111"}],
        ["email", "sms", "in_app", "push"],
        key=f"key-{SECRET}",
    )
    deliveries = attempt_all(answer)
    assert {(d.channel, d.status) for d in deliveries} >= {
        ("email", "delivered"),
        ("sms", "delivered"),
        ("in_app", "delivered"),
        ("push", "delivered"),
    }
    push = Delivery.objects.get(channel="push", notification__user=alice)
    assert [r["status"] for r in push.device_results.values()] == ["delivered"]
    (pushed,) = OutboxMessage.objects.filter(delivery=push)
    assert_encrypted(pushed, "to", f"token-{SECRET}")
    key = IdempotencyKey.objects.get(key=f"key-{SECRET}")
    assert_encrypted(key, "response", "Raw@Example.com")  # the spec as the caller wrote it
    check_pipeline(answer["request_id"])
    raw = Notification.objects.get(email_hash=lookup_hash("raw@example.com"))
    assert (raw.email, raw.recipient) == ("raw@example.com", {"email": "Raw@Example.com"})


def bulk_send(sender, alice) -> None:
    response = sender.post(
        "/api/v1/notifications/bulk",
        {
            "recipients": [
                {"user_id": "alice", "data": {"name": f"A-{SECRET}"}},
                {"email": "Bulk@Example.com", "data": {"name": f"B-{SECRET}"}},
                {"phone": "+33622222222"},
            ],
            "category": "alerts",
            "channels": ["email", "sms"],
            "content": CONTENT,
            "data": {"code": f"code-{SECRET}"},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    batch_id = response.json()["batch_id"]
    # The set-based insert of the accept.
    waiting = {r.position: r for r in BulkRecipient.objects.filter(request_id=batch_id)}
    assert_encrypted(waiting[1], "email", "bulk@example.com")
    assert waiting[1].email_hash == lookup_hash("bulk@example.com")
    assert_encrypted(waiting[1], "spec", "Bulk@Example.com")
    assert_encrypted(waiting[1], "data", f"B-{SECRET}")
    assert_encrypted(waiting[2], "phone", "+33622222222")
    assert waiting[2].phone_hash == lookup_hash("+33622222222")
    assert_encrypted(waiting[0], "spec", "alice")
    assert_encrypted(waiting[0], "email")  # blank, still ciphertext
    assert bulk.bulk_fan_out(batch_id)["written"] == 3
    notification = Notification.objects.get(email_hash=lookup_hash("bulk@example.com"))
    assert notification.data["name"] == f"B-{SECRET}"
    services.deliveries_attempt(
        list(
            Delivery.objects.filter(notification__request_id=batch_id).values_list("id", flat=True)
        )
    )
    check_pipeline(batch_id)


def scheduled_send(sender, alice) -> None:
    later = timezone.now() + dt.timedelta(hours=2)
    answer = send(sender, [{"user_id": "alice"}], ["email", "in_app"], scheduled_at=later)
    deliveries = Delivery.objects.filter(notification__request_id=answer["request_id"])
    assert {d.status for d in deliveries} == {"scheduled"}
    deliveries.update(scheduled_for=timezone.now() - dt.timedelta(minutes=1))
    assert services.deliveries_sweep()["released"] == 2
    services.deliveries_attempt([d.id for d in deliveries])
    assert {d.status for d in deliveries.all()} == {"delivered"}
    check_pipeline(answer["request_id"])


def provider_webhook(sender, alice, client, settings) -> None:
    settings.PUBLIC_BASE_URL = "https://comm.example.com"
    settings.NOTIFICATION_PROVIDERS = {
        "twilio": {
            "BACKEND": "notifications.providers.twilio_sms.TwilioSmsProvider",
            "OPTIONS": {
                "ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
                "AUTH_TOKEN": "twilio-auth-token",
                "FROM": "+15005550006",
            },
        }
    }
    answer = send(sender, [{"phone": "+33633333333"}], ["sms"])
    (delivery,) = Delivery.objects.filter(notification__request_id=answer["request_id"])
    # As if Twilio had accepted it: its webhook then moves the delivery on.
    Delivery.objects.filter(id=delivery.id).update(
        status="sent", provider="twilio", provider_message_id="SMenc"
    )
    response = twilio_post(client, twilio_status("SMenc", "undelivered", ErrorCode="30003"))
    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.error
    assert_encrypted(delivery, "address", "+33633333333")
    assert_encrypted(delivery, "error", delivery.error)
    check_pipeline(answer["request_id"])


def erasure_blanks(sender, alice) -> None:
    answer = send(sender, [{"email": "gone@example.com"}], ["email"], key="erase-me")
    attempt_all(answer)
    done = erasure.erase("email", "gone@example.com", requested_by="test")
    assert done.erased["notifications.notifications"] == 1
    assert done.erased["notifications.outbox"] == 1
    assert done.erased["notifications.idempotency_keys"] == 1
    (n,) = Notification.objects.filter(request_id=answer["request_id"])
    assert (n.email, n.email_hash, n.title, n.body, n.recipient) == ("", "", "", "", {})
    for name in ("email", "title", "body", "recipient", "data"):
        assert_encrypted(n, name)  # the blanks are ciphertext too
    d = n.deliveries.get()
    assert (d.address, d.address_hash) == ("", "")
    assert_encrypted(d, "address")
    # Found nothing the second time: the anonymised rows are told apart in SQL.
    again = erasure.erase("email", "gone@example.com", requested_by="test")
    assert again.already_erased, again.erased


PATHS = {
    "single send (email, sms, in_app, push), outbox, idempotency": single_send,
    "bulk accept (set-based) and fan-out": bulk_send,
    "scheduled send released by the sweep": scheduled_send,
    "provider webhook": provider_webhook,
    "erasure": erasure_blanks,
}


@pytest.mark.parametrize("path", PATHS)
def test_every_write_path_stores_ciphertext_and_reads_back(path, request, sender, alice):
    drive = PATHS[path]
    drive(*(request.getfixturevalue(name) for name in inspect.signature(drive).parameters))


def test_the_delivery_log_finds_an_address_exactly_and_the_outbox_by_recipient(
    sender, client, make_user_token
):
    staff = User.objects.create_superuser(username="ops", email="ops@example.com", password="pw")
    client.force_login(staff)
    answer = send(sender, [{"email": "Find.Me@example.com"}], ["email"])
    (delivery,) = attempt_all(answer)
    log = client.get("/admin/notifications/delivery/", {"q": "find.me@EXAMPLE.com"})
    assert log.status_code == 200 and str(delivery.id).encode() in log.content
    missed = client.get("/admin/notifications/delivery/", {"q": "find.me@example.org"})
    assert str(delivery.id).encode() not in missed.content
    (message,) = OutboxMessage.objects.filter(delivery=delivery)
    outbox = client.get("/admin/notifications/outboxmessage/", {"q": "find.me@example.com"})
    assert outbox.status_code == 200 and str(message.id).encode() in outbox.content
    other = client.get("/admin/notifications/outboxmessage/", {"q": "find@example.com"})
    assert str(message.id).encode() not in other.content
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {make_user_token('op', staff=True)}")
    listed = api.get("/api/v1/outbox", {"to": "Find.Me@example.com"}).json()
    assert [m["to"] for m in listed["results"]] == ["find.me@example.com"], listed


def test_the_migration_encrypts_existing_rows():
    """Back to 0008, plaintext rows written with SQL, forward again: read back decrypted, the
    columns ciphertext, the hashes filled."""
    request_id, notification_id, delivery_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    migration = "0009_encrypt_notifications"
    with before_migration("notifications", migration), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO notifications_notificationrequest (id, caller, idempotency_key, "
            "category_id, template_key, content, data, locale, priority, channels, "
            "scheduled_local, local_timezone, bulk, accepted, rejected, created_at) VALUES "
            "(%s, 'svc', '', 'alerts', '', %s, '{}', '', 'normal', '[\"email\"]', false, '', "
            "false, 0, '[]', now())",
            [request_id, f'{{"subject": "{SECRET}"}}'],
        )
        cursor.execute(
            "INSERT INTO notifications_notification (id, request_id, recipient, email, phone, "
            "category_id, locale, title, body, action_url, data, created_at) VALUES "
            "(%s, %s, '{\"email\": \"old@example.com\"}', 'old@example.com', '', 'alerts', '', "
            "%s, 'body', '', '{}', now())",
            [notification_id, request_id, f"Title {SECRET}"],
        )
        cursor.execute(
            "INSERT INTO notifications_delivery (id, notification_id, channel, address, status, "
            "reason, priority, attempts, provider_attempts, provider_index, provider, "
            "provider_message_id, error, variant, device_results, created_at, updated_at) VALUES "
            "(%s, %s, 'email', 'old@example.com', 'sent', '', 'normal', 1, 1, 0, 'outbox', "
            "'', %s, '', '{}', now(), now())",
            [delivery_id, notification_id, "550 <old@example.com>: no such user"],
        )
        cursor.execute(
            'INSERT INTO notifications_outboxmessage (id, delivery_id, channel, "to", subject, '
            "text, html, payload, created_at) VALUES "
            "(%s, %s, 'email', 'old@example.com', %s, 'text', '', '{}', now())",
            [uuid.uuid4(), delivery_id, SECRET],
        )
    notification = Notification.objects.get(id=notification_id)
    assert_encrypted(notification, "title", SECRET)
    assert_encrypted(notification, "email", "old@example.com")
    assert notification.recipient == {"email": "old@example.com"}
    assert notification.email_hash == lookup_hash("old@example.com")
    assert_encrypted(NotificationRequest.objects.get(id=request_id), "content", SECRET)
    delivery = Delivery.objects.get(id=delivery_id)
    assert_encrypted(delivery, "address", "old@example.com")
    assert_encrypted(delivery, "error", "550 <old@example.com>: no such user")
    assert Delivery.objects.get(address_hash=lookup_hash("old@example.com")).id == delivery_id
    message = OutboxMessage.objects.get(to_hash=lookup_hash("old@example.com"))
    assert_encrypted(message, "subject", SECRET)
    assert stored(OutboxMessage, "to", message.id) != b"old@example.com"
