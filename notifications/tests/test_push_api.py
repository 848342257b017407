"""The device registry API, the VAPID public key and ``manage.py vapid_keys``."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import call_command

from notifications.api.devices import _endpoint_allowed
from notifications.models import Device
from notifications.providers import webpush
from notifications.providers.webpush import b64url, generate_pair

DEVICES = "/api/v1/devices"
ROOT = Path(__file__).resolve().parents[2]


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def subscription(endpoint: str = "https://fcm.googleapis.com/fcm/send/abc") -> dict:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": b64url(point), "auth": b64url(os.urandom(16))},
    }


def test_same_token_twice_is_one_device(as_user, alice):
    client = as_user(alice)
    body = {"platform": "ios", "token": "fcm-token-0001", "app_id": "com.example.app"}
    first = client.post(DEVICES, body, format="json")
    assert first.status_code == 201, first.content
    again = client.post(DEVICES, {**body, "locale": "fr-FR"}, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    (device,) = Device.objects.all()
    assert (device.platform, device.app_id, device.locale, device.active) == (
        "ios",
        "com.example.app",
        "fr-FR",
        True,
    )


def test_same_subscription_twice_is_one_device_and_a_dead_one_comes_back(as_user, alice):
    client = as_user(alice)
    sub = subscription()
    first = client.post(DEVICES, {"platform": "web", "subscription": sub}, format="json")
    assert first.status_code == 201, first.content
    Device.objects.update(active=False, last_error="gone", failure_count=2)
    again = client.post(
        DEVICES, {"platform": "web", "subscription": sub, "browser": "firefox"}, format="json"
    )
    assert again.status_code == 200
    (device,) = Device.objects.all()
    assert (device.endpoint, device.p256dh, device.auth) == (
        sub["endpoint"],
        sub["keys"]["p256dh"],
        sub["keys"]["auth"],
    )
    assert (device.active, device.failure_count, device.last_error, device.browser) == (
        True,
        0,
        "",
        "firefox",
    )


def test_a_token_registered_by_another_user_moves_to_them(as_user, alice, bob):
    as_user(alice).post(DEVICES, {"platform": "android", "token": "shared-token-1"}, format="json")
    response = as_user(bob).post(
        DEVICES, {"platform": "android", "token": "shared-token-1"}, format="json"
    )
    assert response.status_code == 200
    assert Device.objects.get().user == bob


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"platform": "ios"}, "token"),
        ({"platform": "android", "token": "has spaces in it"}, "token"),
        ({"platform": "web"}, "subscription"),
        ({"platform": "web", "token": "abcdefgh", "subscription": subscription()}, "token"),
        ({"platform": "ios", "token": "abcdefgh", "subscription": subscription()}, "subscription"),
        ({"platform": "blackberry", "token": "abcdefgh"}, "platform"),
    ],
)
def test_invalid_registrations(as_user, alice, body, field):
    response = as_user(alice).post(DEVICES, body, format="json")
    assert response.status_code == 400
    assert field in str(response.json())
    assert not Device.objects.exists()


def test_invalid_subscription_keys(as_user, alice):
    sub = subscription()
    sub["keys"]["p256dh"] = b64url(b"\x04" + b"x" * 10)
    sub["keys"]["auth"] = "not base64!"
    response = as_user(alice).post(DEVICES, {"platform": "web", "subscription": sub}, format="json")
    assert response.status_code == 400
    assert "p256dh" in str(response.json()) and "auth" in str(response.json())


def test_outside_development_only_known_push_services(settings):
    """Any other endpoint would have this service POST wherever a user likes (SSRF)."""

    settings.DEVELOPMENT = False
    assert _endpoint_allowed("https://fcm.googleapis.com/fcm/send/x")
    assert _endpoint_allowed("https://updates.push.services.mozilla.com/wpush/v2/x")
    assert _endpoint_allowed("https://wns2-par02p.notify.windows.com/w/?token=x")
    assert not _endpoint_allowed("http://fcm.googleapis.com/fcm/send/x")
    assert not _endpoint_allowed("https://169.254.169.254/latest/meta-data")
    assert not _endpoint_allowed("https://fcm.googleapis.com.evil.example/x")
    settings.DEVELOPMENT = True
    assert _endpoint_allowed("http://127.0.0.1:9000/push/x")


def test_list_mine_with_a_bounded_query_count(as_user, alice, bob, django_assert_num_queries):
    Device.objects.bulk_create(
        [Device(user=alice, platform="android", token=f"alice-{i:03d}") for i in range(30)]
        + [Device(user=bob, platform="ios", token="bob-1")]
        + [Device(user=alice, platform="ios", token="alice-dead", active=False)]
    )
    client = as_user(alice)
    with django_assert_num_queries(2):  # the user (token), the devices
        response = client.get(DEVICES)
    assert response.status_code == 200
    tokens = {d["token"] for d in response.json()["results"]}
    assert len(tokens) == 30 and all(t.startswith("alice-0") for t in tokens)
    assert as_user(bob).get(DEVICES + "/").json()["results"][0]["token"] == "bob-1"


def test_delete_mine_but_never_someone_elses(as_user, alice, bob):
    mine = Device.objects.create(user=alice, platform="ios", token="alice-token")
    theirs = Device.objects.create(user=bob, platform="ios", token="bob-token")
    client = as_user(alice)
    assert client.delete(f"{DEVICES}/{theirs.id}").status_code == 404
    assert Device.objects.filter(id=theirs.id).exists()
    assert client.delete(f"{DEVICES}/{mine.id}/").status_code == 204
    assert client.delete(f"{DEVICES}/{mine.id}").status_code == 404
    assert list(Device.objects.values_list("id", flat=True)) == [theirs.id]


def test_devices_need_a_user_token(api_client, sender):
    assert api_client.get(DEVICES).status_code == 401
    assert sender.post(DEVICES, {"platform": "ios", "token": "abcdefgh"}).status_code == 403


def test_vapid_public_key_from_settings(api_client, settings):
    pair = generate_pair()
    providers = dict(settings.NOTIFICATION_PROVIDERS)
    providers["webpush"] = {
        **providers["webpush"],
        "OPTIONS": {"VAPID_PRIVATE_KEY": pair["private_pem"], "VAPID_PUBLIC_KEY": ""},
    }
    settings.NOTIFICATION_PROVIDERS = providers
    response = api_client.get("/api/v1/push/vapid-public-key")
    assert response.status_code == 200
    key = response.json()["public_key"]
    assert key == pair["VAPID_PUBLIC_KEY"]
    raw = b64url_decode(key)
    assert len(raw) == 65 and raw[0] == 4
    assert "=" not in key and "+" not in key and "/" not in key
    assert api_client.get("/api/v1/push/vapid-public-key/").json()["public_key"] == key


def test_vapid_keys_that_do_not_pair_are_refused(api_client, settings):
    providers = dict(settings.NOTIFICATION_PROVIDERS)
    providers["webpush"] = {
        **providers["webpush"],
        "OPTIONS": {
            "VAPID_PRIVATE_KEY": generate_pair()["VAPID_PRIVATE_KEY"],
            "VAPID_PUBLIC_KEY": generate_pair()["VAPID_PUBLIC_KEY"],
        },
    }
    settings.NOTIFICATION_PROVIDERS = providers
    response = api_client.get("/api/v1/push/vapid-public-key")
    assert response.status_code == 503
    assert "pair" in response.json()["detail"]


def test_vapid_keys_generated_once_under_var_dir_by_racing_processes(settings, tmp_path):
    """Four processes start at once with no key: one generates it, all end up with the same."""
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from django.conf import settings
        settings.configure(VAR_DIR=Path(sys.argv[1]), DEVELOPMENT=True, NOTIFICATION_PROVIDERS={})
        from notifications.providers.webpush import vapid_public_key
        print(vapid_public_key())
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(4)
    ]
    keys = set()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        keys.add(out.strip())
    assert len(keys) == 1
    assert (tmp_path / "vapid_private_key.pem").stat().st_mode & 0o777 == 0o600

    # This process reads the same file.
    settings.VAR_DIR = tmp_path
    providers = dict(settings.NOTIFICATION_PROVIDERS)
    providers["webpush"] = {**providers["webpush"], "OPTIONS": {}}
    settings.NOTIFICATION_PROVIDERS = providers
    assert webpush.vapid_public_key() == keys.pop()


def test_vapid_keys_outside_development_must_be_set(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.DEVELOPMENT = False
    with pytest.raises(webpush.ProviderNotConfiguredError):
        webpush.vapid_private_key({})
    assert not (tmp_path / "vapid_private_key.pem").exists()


def test_manage_vapid_keys_prints_a_usable_pair():
    out = io.StringIO()
    call_command("vapid_keys", "--pem", stdout=out)
    lines = dict(
        line.split("=", 1) for line in out.getvalue().splitlines() if line.startswith("VAPID_")
    )
    options = {"VAPID_PRIVATE_KEY": lines["VAPID_PRIVATE_KEY"], "VAPID_PUBLIC_KEY": ""}
    assert webpush.vapid_public_key(options) == lines["VAPID_PUBLIC_KEY"]
    assert "BEGIN PRIVATE KEY" in out.getvalue()
    # The same pair as PEM in a one-line environment variable (newlines escaped) also loads.
    pem = out.getvalue().split("VAPID_PUBLIC_KEY=")[1].split("\n", 1)[1].strip()
    one_line = pem.replace("\n", "\\n")
    assert webpush.vapid_public_key({"VAPID_PRIVATE_KEY": one_line}) == lines["VAPID_PUBLIC_KEY"]


def test_push_page_uses_the_static_files(client):
    response = client.get("/api/v1/push/page")
    assert response.status_code == 200
    html = response.content.decode()
    for name in ("push.js", "page.js", "sw.js"):
        assert f"/static/notifications/push/{name}" in html
