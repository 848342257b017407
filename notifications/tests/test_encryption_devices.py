"""Devices and suppressions encrypted at rest: each write path (the devices API, the upsert by
hash, ``bulk_create``, the suppression services and the bounce webhook, the erasure's set-based
insert, the migration of existing rows) leaves ciphertext in the column that reads back, and the
lookups that need equality go through the keyed hashes."""

from __future__ import annotations

import pytest
from django.db import connection

from communication.compliance import erasure
from communication.compliance.keyed import lookup_hash
from conftest import assert_encrypted, before_migration, stored
from notifications import services
from notifications.models import Device, Suppression, suppression_hash
from notifications.tests.test_push_api import DEVICES, subscription
from notifications.tests.test_push_providers import (  # noqa: F401 (fixtures)
    FakeFcm,
    add_devices,
    carol,
    fake,
    push_settings,
    send_push,
    server,
    service_account,
    vapid,
)
from notifications.tests.test_webhooks import (
    ACCOUNT,
    PUBLIC,
    TWILIO_TOKEN,
    make_delivery,
    twilio_post,
    twilio_status,
)

pytestmark = pytest.mark.django_db

TOKEN = "fcm-Token_0001:APA91bHun4MxP5egoKMwt2KZFBaFUH"


def _register(client, body: dict) -> Device:
    response = client.post(DEVICES, body, format="json")
    assert response.status_code in (200, 201), response.content
    return Device.objects.get(id=response.json()["id"])


@pytest.mark.parametrize("platform", ["android", "web"])
def test_registered_device_is_ciphertext_and_one_row_per_token(
    platform, as_user, alice, bob, admin_client
):
    """The API's register, then another user's re-register of the same token or endpoint (the
    upsert finds it by hash): one row, the new owner, every secret column ciphertext."""
    if platform == "web":
        sub = subscription("https://updates.push.services.mozilla.com/wpush/v2/Secret-Path")
        body: dict = {"platform": "web", "subscription": sub}
        plain = {
            "endpoint": sub["endpoint"],
            "p256dh": sub["keys"]["p256dh"],
            "auth": sub["keys"]["auth"],
        }
        hashed = ("endpoint_hash", sub["endpoint"])
    else:
        body = {"platform": "android", "token": TOKEN}
        plain = {"token": TOKEN}
        hashed = ("token_hash", TOKEN)

    device = _register(as_user(alice), body)
    for name, value in plain.items():
        assert_encrypted(device, name, value)
    assert getattr(device, hashed[0]) == lookup_hash(hashed[1], casefold=False)

    again = _register(as_user(bob), body)
    assert again.id == device.id and again.user_id == bob.pk
    assert Device.objects.count() == 1
    for name, value in plain.items():
        assert_encrypted(again, name, value)

    if platform == "android":  # tokens are case-sensitive: one differing in case is another
        other = _register(as_user(alice), {**body, "token": TOKEN.swapcase()})
        assert other.id != device.id
        other.delete()

    # The owner lists it (decrypted) and removes it.
    listed = as_user(bob).get(DEVICES).json()["results"]
    shown = plain.get("token") or plain["endpoint"]
    assert [d.get("token") or d.get("endpoint") for d in listed] == [shown]
    # Staff find it by the exact token or endpoint (its hash), not by a part of it.
    for term, count in ((shown, 1), (shown[:-1], 0)):
        page = admin_client.get("/admin/notifications/device/", {"q": term})
        assert page.status_code == 200 and len(page.context["cl"].result_list) == count
    assert as_user(bob).delete(f"{DEVICES}/{device.id}").status_code == 204
    assert not Device.objects.exists()


def test_dead_token_reported_by_fcm_deactivates_the_device(push_settings, fake, sender, carol):  # noqa: F811
    """Devices written by ``bulk_create`` (hashes set there too); FCM answers UNREGISTERED for
    one: that device is deactivated, the other one got the push."""
    FakeFcm(fake)
    live, dead = add_devices(carol, ["live-1", "dead-1"])
    for device, token in ((live, "live-1"), (dead, "dead-1")):
        assert_encrypted(device, "token", token)
    assert Device.objects.get(token_hash=lookup_hash("dead-1", casefold=False)).pk == dead.pk

    delivery = send_push(sender, "carol", content={"title": "T", "body": "B"})
    assert services.delivery_attempt(delivery["id"]) == "sent"
    dead.refresh_from_db()
    live.refresh_from_db()
    assert (dead.active, dead.last_error, live.active) == (False, "unregistered", True)
    assert dead.token == "dead-1"


@pytest.fixture
def twilio(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "twilio": {
            "BACKEND": "notifications.providers.twilio_sms.TwilioSmsProvider",
            "OPTIONS": {"ACCOUNT_SID": ACCOUNT, "AUTH_TOKEN": TWILIO_TOKEN, "FROM": "+15005550006"},
        },
    }


@pytest.mark.parametrize("path", ["webhook", "manual"])
def test_suppression_address_is_ciphertext_found_by_hash_and_erased(path, client, twilio):
    if path == "webhook":
        make_delivery("twilio", "SM9", channel="sms", address="+33612345678")
        response = twilio_post(client, twilio_status("SM9", "undelivered", ErrorCode="21610"))
        assert response.status_code == 200
        channel, address = "sms", "+33612345678"
    else:
        services.suppression_add(
            channel="email", address="Blocked@Example.com", reason=Suppression.Reason.MANUAL
        )
        channel, address = "email", "blocked@example.com"

    suppression = Suppression.objects.get(channel=channel, address_hash=suppression_hash(address))
    assert_encrypted(suppression, "address", address)

    # Erasure finds it by hash, removes the address and keeps the hash (still suppressed).
    erasure.erase("phone" if channel == "sms" else "email", address, requested_by="test")
    suppression.refresh_from_db()
    assert suppression.address is None and suppression.address_hash == suppression_hash(address)


def test_migration_encrypts_existing_devices_and_suppressions(alice):
    """Back to before the migration, rows written as they were (plain columns), then forward:
    ciphertext that reads back, hashes filled, the unique constraint on the hash."""
    migration = "0010_encrypt_devices_suppressions"
    with before_migration("notifications", migration), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO notifications_device (user_id, platform, token, endpoint, p256dh, auth, "
            "app_id, browser, locale, active, failure_count, last_error) VALUES "
            "(%s, 'ios', 'old-token', '', '', '', '', '', '', true, 0, ''), "
            "(%s, 'web', '', 'https://push.example.com/old', 'p-key', 'a-key', '', '', '', "
            "true, 0, '')",
            [alice.pk, alice.pk],
        )
        cursor.execute(
            "INSERT INTO notifications_suppression (channel, address, address_hash, reason, "
            "detail) VALUES ('email', 'old@example.com', %s, 'hard_bounce', ''), "
            "('sms', '', %s, 'erased', '')",
            [suppression_hash("old@example.com"), suppression_hash("+33612345678")],
        )

    ios = Device.objects.get(token_hash=lookup_hash("old-token", casefold=False))
    web = Device.objects.get(
        endpoint_hash=lookup_hash("https://push.example.com/old", casefold=False)
    )
    assert_encrypted(ios, "token", "old-token")
    assert_encrypted(web, "endpoint", "https://push.example.com/old")
    assert_encrypted(web, "p256dh", "p-key")
    assert_encrypted(web, "auth", "a-key")
    assert stored(Device, "endpoint", ios.pk) != b""  # the blank one is ciphertext too
    assert ios.endpoint == "" and ios.endpoint_hash == ""
    old = Suppression.objects.get(address_hash=suppression_hash("old@example.com"))
    assert_encrypted(old, "address", "old@example.com")
    erased = Suppression.objects.get(address_hash=suppression_hash("+33612345678"))
    assert erased.address is None and stored(Suppression, "address", erased.pk) is None
