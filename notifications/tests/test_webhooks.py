"""Provider webhooks: verified before anything is written, then applied once and never backwards.

Signatures are made here the way each vendor documents them (not with our code): Twilio's
HMAC-SHA1 over URL + sorted parameters, SendGrid's ECDSA P-256 over timestamp + body, Mailgun's
HMAC-SHA256 over timestamp + token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client

from analytics.models import Event
from notifications.models import (
    Delivery,
    Notification,
    NotificationRequest,
    ProviderEvent,
    Suppression,
    suppression_hash,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

PUBLIC = "https://comm.example.com"
ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TWILIO_TOKEN = "twilio-auth-token"
MAILGUN_KEY = "mailgun-signing-key"

SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


@pytest.fixture(autouse=True)
def providers(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.OVH_WEBHOOK_TOKEN = "ovh-secret"
    settings.NOTIFICATION_PROVIDERS = {
        "sendgrid": {
            "BACKEND": "notifications.providers.sendgrid.SendGridEmailProvider",
            "OPTIONS": {"API_KEY": "SG.k", "WEBHOOK_VERIFICATION_KEY": SENDGRID_PUBLIC},
        },
        "mailgun": {
            "BACKEND": "notifications.providers.mailgun.MailgunEmailProvider",
            "OPTIONS": {"API_KEY": "key", "WEBHOOK_SIGNING_KEY": MAILGUN_KEY},
        },
        "twilio": {
            "BACKEND": "notifications.providers.twilio_sms.TwilioSmsProvider",
            "OPTIONS": {"ACCOUNT_SID": ACCOUNT, "AUTH_TOKEN": TWILIO_TOKEN, "FROM": "+15005550006"},
        },
        "ovh": {
            "BACKEND": "notifications.providers.ovh_sms.OvhSmsProvider",
            "OPTIONS": {
                "APPLICATION_KEY": "a",
                "APPLICATION_SECRET": "s",
                "CONSUMER_KEY": "c",
                "SMS_SERVICE": "sms-x",
            },
        },
    }


def make_delivery(
    provider: str,
    message_id: str,
    *,
    channel: str = "email",
    address: str = "ops@example.com",
    status: str = "sent",
) -> Delivery:
    request = NotificationRequest.objects.create(caller="billing", category_id="alerts")
    notification = Notification.objects.create(
        request=request,
        category_id="alerts",
        recipient={channel: address},
        email=address if channel == "email" else "",
        phone=address if channel == "sms" else "",
    )
    return Delivery.objects.create(
        notification=notification,
        channel=channel,
        address=address,
        status=status,
        provider=provider,
        provider_message_id=message_id,
    )


def recorded() -> tuple[int, int, int]:
    return Event.objects.count(), ProviderEvent.objects.count(), Suppression.objects.count()


def status_of(delivery: Delivery) -> str:
    delivery.refresh_from_db()
    return delivery.status


# ---------------------------------------------------------------------------------------- Twilio


def twilio_signature(url: str, params: dict, token: str = TWILIO_TOKEN) -> str:
    payload = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    return base64.b64encode(
        hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()
    ).decode()


def twilio_post(
    client: Client,
    params: dict,
    *,
    path="/webhooks/twilio/status",
    signature: str | None = None,
    **extra,
):
    if signature is None:
        signature = twilio_signature(PUBLIC + path, params)
    return client.post(path, params, HTTP_X_TWILIO_SIGNATURE=signature, **extra)


def twilio_status(sid: str, status: str, **more) -> dict:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACCOUNT,
        "MessageStatus": status,
        "SmsStatus": status,
        "To": "+33612345678",
        "From": "+15005550006",
        **more,
    }


def test_twilio_delivered(client):
    delivery = make_delivery("twilio", "SM1", channel="sms", address="+33612345678")

    response = twilio_post(client, twilio_status("SM1", "delivered"))

    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    assert delivery.delivered_at is not None
    event = Event.objects.get(delivery_id=delivery.id)
    assert (event.type, event.provider, event.channel) == ("delivered", "twilio", "sms")


def test_twilio_bad_signature_is_refused_and_changes_nothing(client):
    delivery = make_delivery("twilio", "SM1", channel="sms", address="+33612345678")
    params = twilio_status("SM1", "delivered")

    forged = twilio_post(
        client,
        params,
        signature=twilio_signature(
            PUBLIC + "/webhooks/twilio/status", params, token="not-the-token"
        ),
    )
    unsigned = client.post("/webhooks/twilio/status", params)
    # Signed for the URL behind the proxy rather than the one Twilio called.
    internal = twilio_post(
        client,
        params,
        signature=twilio_signature("http://testserver/webhooks/twilio/status", params),
    )
    tampered = twilio_post(
        client,
        {**params, "MessageStatus": "failed"},
        signature=twilio_signature(PUBLIC + "/webhooks/twilio/status", params),
    )

    assert [r.status_code for r in (forged, unsigned, internal, tampered)] == [403] * 4
    assert status_of(delivery) == "sent"
    assert recorded() == (0, 0, 0)


def test_twilio_opt_out_fails_the_delivery_and_suppresses_the_number(client):
    delivery = make_delivery("twilio", "SM2", channel="sms", address="+33612345678")

    response = twilio_post(client, twilio_status("SM2", "undelivered", ErrorCode="21610"))

    assert response.status_code == 200
    assert status_of(delivery) == "failed"
    suppression = Suppression.objects.get(
        channel="sms", address_hash=suppression_hash("+33612345678")
    )
    assert suppression.reason == "unsubscribe"


def test_twilio_duplicate_applied_once_and_never_backwards(client):
    delivery = make_delivery("twilio", "SM3", channel="sms", address="+33612345678")

    first = twilio_post(client, twilio_status("SM3", "delivered"))
    again = twilio_post(client, twilio_status("SM3", "delivered"))
    late = twilio_post(client, twilio_status("SM3", "sent"))

    assert [first.status_code, again.status_code, late.status_code] == [200, 200, 200]
    assert status_of(delivery) == "delivered"
    events = list(Event.objects.filter(delivery_id=delivery.id).values_list("type", "data"))
    # The duplicate left no trace; the late "sent" is recorded but not applied.
    assert [(t, d["applied"]) for t, d in events] == [("delivered", True), ("sent", False)]


def test_twilio_alias_query_and_trailing_slash(client, settings):
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "twilio-eu": {
            "BACKEND": "notifications.providers.twilio_sms.TwilioSmsProvider",
            "OPTIONS": {"ACCOUNT_SID": ACCOUNT, "AUTH_TOKEN": "eu-token", "FROM": "+1"},
        },
    }
    delivery = make_delivery("twilio-eu", "SM4", channel="sms", address="+33612345678")
    path = "/webhooks/twilio/status/?provider=twilio-eu"
    params = twilio_status("SM4", "delivered")

    wrong_token = twilio_post(client, params, path=path)
    right_token = twilio_post(
        client, params, path=path, signature=twilio_signature(PUBLIC + path, params, "eu-token")
    )

    assert (wrong_token.status_code, right_token.status_code) == (403, 200)
    assert status_of(delivery) == "delivered"


def test_twilio_ip_allow_list(client, settings):
    settings.TWILIO_WEBHOOK_ALLOWED_IPS = ["10.0.0.0/8", "192.0.2.7"]
    delivery = make_delivery("twilio", "SM5", channel="sms", address="+33612345678")
    params = twilio_status("SM5", "delivered")

    outside = twilio_post(client, params, REMOTE_ADDR="127.0.0.1")
    assert outside.status_code == 403
    assert status_of(delivery) == "sent"

    inside = twilio_post(client, params, REMOTE_ADDR="10.1.2.3")
    assert inside.status_code == 200
    assert status_of(delivery) == "delivered"


def test_allow_list_behind_a_trusted_proxy(client, settings):
    settings.TWILIO_WEBHOOK_ALLOWED_IPS = ["192.0.2.7"]
    settings.WEBHOOK_TRUSTED_PROXY_COUNT = 1
    make_delivery("twilio", "SM6", channel="sms", address="+33612345678")
    params = twilio_status("SM6", "delivered")

    # The caller's own X-Forwarded-For entry is not trusted; the proxy's appended one is.
    spoofed = twilio_post(
        client, params, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.7, 203.0.113.9"
    )
    real = twilio_post(
        client, params, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9, 192.0.2.7"
    )

    assert (spoofed.status_code, real.status_code) == (403, 200)


def test_twilio_unconfigured_provider_refuses(client, settings):
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "twilio": {
            "BACKEND": "notifications.providers.twilio_sms.TwilioSmsProvider",
            "OPTIONS": {"ACCOUNT_SID": "", "AUTH_TOKEN": "", "FROM": ""},
        },
    }
    params = twilio_status("SM7", "delivered")
    assert (
        twilio_post(
            client,
            params,
            signature=twilio_signature(PUBLIC + "/webhooks/twilio/status", params, token=""),
        ).status_code
        == 403
    )


# -------------------------------------------------------------------------------------- SendGrid

SENDGRID_PATH = "/webhooks/anymail/sendgrid/tracking/"


def sendgrid_event(anymail_id: str, event: str, **more) -> dict:
    return {
        "email": "ops@example.com",
        "timestamp": int(time.time()),
        "event": event,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001",
        "anymail_id": anymail_id,
        "delivery_id": "d-1",
        **more,
    }


def sendgrid_post(
    client: Client,
    events: list[dict],
    *,
    timestamp: int | None = None,
    key=SENDGRID_KEY,
    path: str = SENDGRID_PATH,
    signature: str | None = None,
):
    body = json.dumps(events).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    if signature is None:
        signature = base64.b64encode(
            key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        ).decode()
    return client.post(
        path,
        body,
        content_type="application/json",
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=signature,
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=stamp,
    )


def test_sendgrid_delivered_and_opened(client):
    delivery = make_delivery("sendgrid", "a1b2")

    response = sendgrid_post(
        client, [sendgrid_event("a1b2", "delivered"), sendgrid_event("a1b2", "open")]
    )

    assert response.status_code == 200
    assert status_of(delivery) == "delivered"
    assert sorted(Event.objects.filter(delivery_id=delivery.id).values_list("type", flat=True)) == [
        "delivered",
        "opened",
    ]


def test_sendgrid_refusals(client, settings):
    delivery = make_delivery("sendgrid", "a1b2")
    events = [sendgrid_event("a1b2", "delivered")]

    other_key = sendgrid_post(client, events, key=ec.generate_private_key(ec.SECP256R1()))
    garbage = sendgrid_post(client, events, signature="not base64!")
    stale = sendgrid_post(client, events, timestamp=int(time.time()) - 600)
    future = sendgrid_post(client, events, timestamp=int(time.time()) + 600)
    unsigned = client.post(SENDGRID_PATH, json.dumps(events), content_type="application/json")

    assert [r.status_code for r in (other_key, garbage, stale, future, unsigned)] == [403] * 5
    assert status_of(delivery) == "sent"
    assert recorded() == (0, 0, 0)

    # Without a verification key nothing is accepted, even a correctly signed post.
    settings.NOTIFICATION_PROVIDERS["sendgrid"]["OPTIONS"]["WEBHOOK_VERIFICATION_KEY"] = ""
    assert sendgrid_post(client, events).status_code == 403
    assert status_of(delivery) == "sent"


def test_sendgrid_hard_bounce_and_complaint_feed_suppression(client):
    bounced = make_delivery("sendgrid", "b1", address="gone@example.com")
    complained = make_delivery("sendgrid", "c1", address="Angry@Example.com")
    blocked = make_delivery("sendgrid", "d1", address="busy@example.com")

    response = sendgrid_post(
        client,
        [
            sendgrid_event(
                "b1",
                "bounce",
                email="gone@example.com",
                type="bounce",
                reason="550 5.1.1 The email account does not exist.",
            ),
            sendgrid_event("c1", "spamreport", email="Angry@Example.com"),
            sendgrid_event(
                "d1", "bounce", email="busy@example.com", type="blocked", reason="421 try later"
            ),
        ],
    )

    assert response.status_code == 200
    assert status_of(bounced) == "failed"
    bounced.refresh_from_db()
    assert "does not exist" in bounced.error
    assert dict(Suppression.objects.values_list("address", "reason")) == {
        "gone@example.com": "hard_bounce",
        "angry@example.com": "complaint",
    }
    # A complaint says nothing about delivery; a blocked message failed, its address stays usable.
    assert status_of(complained) == "sent"
    assert status_of(blocked) == "failed"


def test_sendgrid_duplicate_and_out_of_order(client):
    delivery = make_delivery("sendgrid", "e1")
    delivered = sendgrid_event("e1", "delivered")

    assert sendgrid_post(client, [delivered]).status_code == 200
    assert sendgrid_post(client, [delivered]).status_code == 200
    assert (
        sendgrid_post(
            client, [sendgrid_event("e1", "processed")], path=SENDGRID_PATH.rstrip("/")
        ).status_code
        == 200
    )

    assert status_of(delivery) == "delivered"
    assert list(
        Event.objects.filter(delivery_id=delivery.id).order_by("id").values_list("type", flat=True)
    ) == ["delivered", "sent"]


def test_sendgrid_unreadable_payload_after_a_good_signature(client):
    assert sendgrid_post(client, [{"no": "event"}]).status_code == 400
    assert recorded() == (0, 0, 0)


# --------------------------------------------------------------------------------------- Mailgun

MAILGUN_PATH = "/webhooks/anymail/mailgun/tracking/"


def mailgun_body(
    message_id: str,
    event: str,
    *,
    timestamp: int | None = None,
    token: str | None = None,
    key: str = MAILGUN_KEY,
    **event_data,
) -> dict:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or uuid.uuid4().hex
    signature = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": stamp, "token": token, "signature": signature},
        "event-data": {
            "id": uuid.uuid4().hex,
            "event": event,
            "timestamp": time.time(),
            "recipient": "ops@example.com",
            "message": {"headers": {"message-id": message_id}},
            "user-variables": {"delivery_id": "d-1"},
            **event_data,
        },
    }


def mailgun_post(client: Client, body: dict, path: str = MAILGUN_PATH):
    return client.post(path, json.dumps(body), content_type="application/json")


def test_mailgun_delivered(client):
    delivery = make_delivery("mailgun", "<20260101.1@mg.example.com>")

    response = mailgun_post(client, mailgun_body("20260101.1@mg.example.com", "delivered"))

    assert response.status_code == 200
    assert status_of(delivery) == "delivered"


def test_mailgun_refusals(client):
    delivery = make_delivery("mailgun", "<m1@mg.example.com>")

    forged = mailgun_post(client, mailgun_body("m1@mg.example.com", "delivered", key="wrong"))
    stale = mailgun_post(
        client, mailgun_body("m1@mg.example.com", "delivered", timestamp=int(time.time()) - 3600)
    )
    body = mailgun_body("m1@mg.example.com", "delivered")
    body["event-data"]["event"] = "failed"  # the signature covers the token, not the payload…
    body["signature"]["signature"] = "0" * 64  # …so a forger has to guess it anyway
    guessed = mailgun_post(client, body)

    assert [r.status_code for r in (forged, stale, guessed)] == [403] * 3
    assert status_of(delivery) == "sent"
    assert recorded() == (0, 0, 0)


def test_mailgun_replayed_token_is_refused(client):
    delivery = make_delivery("mailgun", "<m2@mg.example.com>")
    body = mailgun_body("m2@mg.example.com", "delivered", token="t" * 50)

    first = mailgun_post(client, body)
    replay = mailgun_post(client, body)
    # Same token, different (validly re-signed) event: still refused.
    other = mailgun_post(client, mailgun_body("m2@mg.example.com", "opened", token="t" * 50))

    assert (first.status_code, replay.status_code, other.status_code) == (200, 403, 403)
    assert Event.objects.filter(delivery_id=delivery.id).count() == 1


def test_mailgun_permanent_failure_and_complaint(client):
    failed = make_delivery("mailgun", "<m3@mg.example.com>", address="gone@example.com")
    complained = make_delivery("mailgun", "<m4@mg.example.com>", address="angry@example.com")
    deferred = make_delivery("mailgun", "<m5@mg.example.com>", address="slow@example.com")

    responses = [
        mailgun_post(
            client,
            mailgun_body(
                "m3@mg.example.com",
                "failed",
                severity="permanent",
                reason="bounce",
                recipient="gone@example.com",
                **{
                    "delivery-status": {
                        "code": 550,
                        "message": "No such user",
                        "description": "mailbox unavailable",
                    }
                },
            ),
        ),
        mailgun_post(
            client, mailgun_body("m4@mg.example.com", "complained", recipient="angry@example.com")
        ),
        mailgun_post(
            client,
            mailgun_body(
                "m5@mg.example.com",
                "failed",
                severity="temporary",
                reason="generic",
                recipient="slow@example.com",
            ),
        ),
    ]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert status_of(failed) == "failed"
    assert status_of(complained) == "sent"
    assert status_of(deferred) == "sent"
    assert dict(Suppression.objects.values_list("address", "reason")) == {
        "gone@example.com": "hard_bounce",
        "angry@example.com": "complaint",
    }


def test_mailgun_without_a_signing_key_refuses_everything(client, settings):
    settings.NOTIFICATION_PROVIDERS["mailgun"]["OPTIONS"]["WEBHOOK_SIGNING_KEY"] = ""
    make_delivery("mailgun", "<m6@mg.example.com>")
    body = mailgun_body("m6@mg.example.com", "delivered", key="")
    assert mailgun_post(client, body, path=MAILGUN_PATH.rstrip("/")).status_code == 403
    assert recorded() == (0, 0, 0)


# ------------------------------------------------------------------------------------------- OVH


def test_ovh_delivery_callback(client):
    delivery = make_delivery("ovh", "246813579", channel="sms", address="+33612345678")

    response = client.get(
        "/webhooks/ovh/status",
        {
            "token": "ovh-secret",
            "id": "246813579",
            "dlr": "1",
            "receiver": "+33612345678",
            "description": "Delivered",
        },
    )

    assert response.status_code == 200
    assert status_of(delivery) == "delivered"


def test_ovh_refusals(client, settings):
    delivery = make_delivery("ovh", "1357", channel="sms", address="+33612345678")
    query = {"id": "1357", "dlr": "1"}

    wrong = client.get("/webhooks/ovh/status", {**query, "token": "guess"})
    missing = client.get("/webhooks/ovh/status/", query)
    settings.OVH_WEBHOOK_TOKEN = ""
    unconfigured = client.get("/webhooks/ovh/status", {**query, "token": ""})

    assert [r.status_code for r in (wrong, missing, unconfigured)] == [403] * 3
    assert status_of(delivery) == "sent"
    assert recorded() == (0, 0, 0)


def test_ovh_failure_and_duplicate(client):
    delivery = make_delivery("ovh", "8642", channel="sms", address="+33612345678")
    query = {"token": "ovh-secret", "id": "8642", "dlr": "2", "description": "Unknown number"}

    assert client.get("/webhooks/ovh/status", query).status_code == 200
    assert (
        client.post("/webhooks/ovh/status?token=ovh-secret", {"id": "8642", "dlr": "2"}).status_code
        == 200
    )

    delivery.refresh_from_db()
    assert (delivery.status, delivery.error) == ("failed", "Unknown number")
    assert Event.objects.filter(delivery_id=delivery.id).count() == 1


def test_webhooks_need_no_csrf_token_nor_jwt():
    strict = Client(enforce_csrf_checks=True)
    delivery = make_delivery("twilio", "SM9", channel="sms", address="+33612345678")
    assert twilio_post(strict, twilio_status("SM9", "delivered")).status_code == 200
    assert status_of(delivery) == "delivered"
    mail = make_delivery("mailgun", "<m9@mg.example.com>")
    assert mailgun_post(strict, mailgun_body("m9@mg.example.com", "delivered")).status_code == 200
    assert status_of(mail) == "delivered"
    sent = make_delivery("sendgrid", "s9")
    assert sendgrid_post(strict, [sendgrid_event("s9", "delivered")]).status_code == 200
    assert status_of(sent) == "delivered"
