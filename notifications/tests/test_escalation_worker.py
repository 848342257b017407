"""Escalation and cancellation end to end: a real worker sends through the real SendGrid and
Twilio clients to a local server playing them, the beat's sweep releases the steps whose time
came, and a read (inbox, email open) or a caller's cancel stops the rest: the fake provider never
hears of a cancelled step."""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone
from werkzeug import Response

from conftest import wait_for
from notifications import services
from notifications.models import Delivery

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SENDGRID = "/sendgrid/v3/mail/send"
ACCOUNT = "AC" + "0" * 32
TWILIO = f"/twilio/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)


def sendgrid_ok(request):
    return Response("", status=202, headers={"X-Message-Id": f"sg-{uuid.uuid4().hex}"})


def twilio_ok(request):
    body = {"sid": f"SM{uuid.uuid4().hex}", "status": "queued"}
    return Response(json.dumps(body), status=201, content_type="application/json")


@pytest.fixture(scope="module")
def worker_prefix(start_worker, make_httpserver):
    """One worker for the module, whose email goes to SendGrid and SMS to Twilio, both played
    by the session's local HTTP server (``httpserver`` in each test)."""
    prefix = f"esc{uuid.uuid4().hex[:6]}-"
    base = make_httpserver.url_for("/").rstrip("/")
    start_worker(
        {
            "EMAIL_PROVIDERS": "sendgrid",
            "SENDGRID_API_KEY": "SG.test",
            "SENDGRID_API_URL": f"{base}/sendgrid/v3/",
            "SMS_PROVIDERS": "twilio",
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": "t",
            "TWILIO_FROM": "+15005550006",
            "TWILIO_API_URL": f"{base}/twilio",
            "CACHE_KEY_PREFIX": prefix,
        },
        prefix,
    )
    return prefix


@pytest.fixture
def providers(worker_prefix, httpserver, settings):
    httpserver.expect_request(SENDGRID).respond_with_handler(sendgrid_ok)
    httpserver.expect_request(TWILIO).respond_with_handler(twilio_ok)
    settings.CELERY_QUEUE_PREFIX = worker_prefix  # what this process enqueues goes to it
    return httpserver


def calls(server, path) -> list:
    return [request for request, _ in server.log if request.path == path]


def send(sender, escalation, **body) -> dict[str, str]:
    """The send's delivery ids by channel (and its notification's id as ``notification``)."""
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "alice"}],
            "category": "reminders",  # tracking allowed
            "content": {
                "title": "Your appointment",
                "subject": "Your appointment",
                "body": "Tomorrow at 9.",
                "html": '<p>Tomorrow at 9. <a href="https://clinic.example.com/a/42">Move</a></p>',
            },
            "escalation": escalation,
            **body,
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    note = response.json()["notifications"][0]
    return {"notification": note["id"], **{d["channel"]: d["id"] for d in note["deliveries"]}}


def status(delivery_id: str) -> str:
    return Delivery.objects.get(id=delivery_id).status


def sweep_until(predicate, what: str):
    """Runs the beat's sweep (in this process) until ``predicate`` holds."""

    def step():
        services.deliveries_sweep()
        return predicate()

    return wait_for(step, 30, interval=0.2, what=what)


def sweep_after(delivery_id: str) -> dict[str, int]:
    """Waits until the delivery's own time has passed, then sweeps once: a step cancelled in
    time is not released (and so never enqueued)."""
    due = Delivery.objects.get(id=delivery_id).scheduled_for
    wait_for(lambda: timezone.now() > due, 30, what="the step's time")
    return services.deliveries_sweep()


def test_an_unread_notification_escalates_to_every_step(providers, sender, alice):
    ids = send(
        sender,
        [
            {"channel": "in_app"},
            {"channel": "email", "after": "1s"},
            {"channel": "sms", "after": "2s"},
        ],
    )
    assert status(ids["in_app"]) == "delivered"
    assert status(ids["email"]) == status(ids["sms"]) == "scheduled"

    sweep_until(
        lambda: status(ids["email"]) == "sent" and status(ids["sms"]) == "sent",
        what="both later steps to be sent",
    )
    assert len(calls(providers, SENDGRID)) == 1
    assert len(calls(providers, TWILIO)) == 1
    sms = Delivery.objects.get(id=ids["sms"])
    assert sms.sent_at >= sms.scheduled_for


def test_reading_in_the_inbox_stops_the_escalation_at_that_step(providers, sender, alice, as_user):
    ids = send(
        sender,
        [
            {"channel": "in_app"},
            {"channel": "email", "after": "1s"},
            {"channel": "sms", "after": "2s"},
        ],
    )
    sweep_until(lambda: status(ids["email"]) == "sent", what="the email step")

    response = as_user(alice).post(f"/api/v1/notifications/{ids['notification']}/read")
    assert response.status_code == 200

    sms = Delivery.objects.get(id=ids["sms"])
    assert (sms.status, sms.reason) == ("cancelled", "read in inbox")
    assert sweep_after(ids["sms"])["released"] == 0
    assert status(ids["sms"]) == "cancelled"
    assert len(calls(providers, SENDGRID)) == 1
    assert calls(providers, TWILIO) == []


def test_a_person_opening_the_email_stops_the_escalation(providers, sender, alice):
    ids = send(sender, [{"channel": "email"}, {"channel": "sms", "after": "2s"}])
    wait_for(lambda: status(ids["email"]) == "sent", 30, what="the email")
    (request,) = calls(providers, SENDGRID)
    html = next(c["value"] for c in request.get_json()["content"] if c["type"] == "text/html")
    pixel = urlsplit(re.search(r'<img src="([^"]+/t/o/[^"]+)"', html).group(1)).path
    client = Client()

    # Apple's proxy fetching every image is no sign anyone read it.
    client.get(pixel, HTTP_USER_AGENT="Mozilla/5.0")
    assert status(ids["sms"]) == "scheduled"

    client.get(pixel, HTTP_USER_AGENT=SAFARI)
    sms = Delivery.objects.get(id=ids["sms"])
    assert (sms.status, sms.reason) == ("cancelled", "email opened")
    assert sweep_after(ids["sms"])["released"] == 0
    assert calls(providers, TWILIO) == []


def test_a_cancellation_key_stops_pending_deliveries_and_reports_the_sent_ones(
    providers, sender, alice
):
    ids = send(
        sender,
        [{"channel": "email"}, {"channel": "sms", "after": "2s"}],
        cancellation_key="appointment-42",
    )
    wait_for(lambda: status(ids["email"]) == "sent", 30, what="the email")

    response = sender.post(
        "/api/v1/notifications/cancel", {"cancellation_key": "appointment-42"}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == {"cancelled": 1, "already_sent": [ids["email"]]}
    sms = Delivery.objects.get(id=ids["sms"])
    assert (sms.status, sms.reason) == ("cancelled", "cancelled by caller")
    assert sweep_after(ids["sms"])["released"] == 0
    assert calls(providers, TWILIO) == []
