"""Provider webhooks refuse NUL characters in what they were sent, once the request is proven
to be the provider's: a 400 ``validation_error`` naming the field (what any unreadable payload
gets there), and nothing is written. Before, a NUL reached the database: a 500, which the
provider retries."""

from __future__ import annotations

import pytest

from notifications.tests.test_webhooks import (  # the vendors' signatures, made as they document
    mailgun_body,
    mailgun_post,
    make_delivery,
    providers,  # noqa: F401  (autouse: the configured providers)
    recorded,
    sendgrid_event,
    sendgrid_post,
    status_of,
    twilio_post,
    twilio_status,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]


def _refused(response, field):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "validation_error", body
    assert field in body["fields"], body
    assert recorded() == (0, 0, 0)


def test_twilio(client):
    delivery = make_delivery("twilio", "SM1", channel="sms", address="+33612345678")
    _refused(twilio_post(client, twilio_status("SM1", "failed", ErrorCode="30\x0005")), "ErrorCode")
    _refused(twilio_post(client, twilio_status("SM1\x00", "failed")), "MessageSid")
    assert status_of(delivery) == "sent"
    # A forged request is still refused as forged, whatever it holds.
    forged = twilio_post(client, twilio_status("SM1\x00", "failed"), signature="bad")
    assert forged.status_code == 403


def test_sendgrid(client):
    delivery = make_delivery("sendgrid", "a1b2")
    event = sendgrid_event("a1b2", "bounce", reason="550 no\x00such user", type="bounce")
    _refused(sendgrid_post(client, [event]), "[0].reason")
    _refused(sendgrid_post(client, [sendgrid_event("a1\x00b2", "delivered")]), "[0].anymail_id")
    assert status_of(delivery) == "sent"


def test_mailgun(client):
    delivery = make_delivery("mailgun", "<m1@mg.example.com>")
    body = mailgun_body("m1@mg.example.com", "failed", severity="permanent", reason="b\x00d")
    _refused(mailgun_post(client, body), "event-data.reason")
    _refused(
        mailgun_post(client, mailgun_body("m1@mg.example.com", "delivered", token="t\x00k")),
        "signature.token",
    )
    assert status_of(delivery) == "sent"


def test_ovh(client):
    delivery = make_delivery("ovh", "1357", channel="sms", address="+33612345678")
    posted = client.post("/webhooks/ovh/status?token=ovh-secret", {"id": "1357", "dlr": "2\x00"})
    _refused(posted, "dlr")
    query = {"token": "ovh-secret", "id": "1357", "dlr": "2", "description": "x\x00"}
    _refused(client.get("/webhooks/ovh/status", query), "description")
    assert status_of(delivery) == "sent"
