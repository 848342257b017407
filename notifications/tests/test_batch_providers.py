"""Provider batch calls in the delivery pipeline: bulk deliveries of one request go to SendGrid as
one ``mail/send`` with a personalization per recipient, each carrying its substitutions, its
delivery id and its own headers; the local fake applies the substitutions so each recipient's text
is checked against its own render. Content that differs beyond the variables goes one call per
recipient; a failed batch call takes each delivery down the single send's retry path."""

from __future__ import annotations

import json

import pytest
from django.db import transaction
from werkzeug import Response

from analytics import tracking
from analytics.models import Event
from conftest import wait_for
from notifications import services
from notifications.models import Delivery, NotificationRequest
from notifications.providers._merge import merge
from notifications.providers.base import Message, TransientProviderError
from notifications.providers.smtp import SmtpEmailProvider
from notifications.resolution import Recipient
from notifications.services.send import recipients_write
from notifications.tests.fakes import sendgrid_in_process, sendgrid_messages
from notifications.tests.test_providers_email import a_message, smtp_server  # noqa: F401 - a fixture
from notifications.tests.test_webhooks import SENDGRID_PUBLIC, sendgrid_event, sendgrid_post
from notifications.unsubscribe import url_for

SENDGRID = "/sendgrid/v3/mail/send"

CONTENT = {
    "subject": "Hello {{ name }}",
    "text": "Hi {{ name }}, your code is {{ code }}.\nSee you.",
    "html": '<p>Hi <b>{{ name }}</b>, code {{ code }}.</p><a href="https://example.com/offer">go</a>',
}
PEOPLE = [
    ("ann@example.com", "Ann", "A1"),
    ("bob@example.com", "Bob O'Brien & <Co>", "B22"),
    ("cy@example.com", "Cy", "C333"),
    ("di@example.com", "Di", "D4"),
]


@pytest.fixture
def sendgrid(settings, httpserver):
    sendgrid_in_process(settings, httpserver)
    settings.DELIVERY_RETRY_BASE_SECONDS = 60
    return httpserver


def bulk_deliveries(people, content=CONTENT, priority="low", extra=None) -> list[str]:
    """A bulk request's deliveries, written by the one writer as campaigns and bulk sends do."""
    request = NotificationRequest(
        caller="campaign:test",
        category_id="reminders",  # tracked links, List-Unsubscribe
        content=content,
        priority=priority,
        channels=["email"],
        bulk=True,
    )
    recipients = [
        Recipient(
            spec={"email": address},
            email=address,
            data={"name": name, "code": code, **(extra or {}).get(address, {})},
        )
        for address, name, code in people
    ]
    with transaction.atomic():
        written = recipients_write(request, recipients)
    return [str(d.id) for d in sorted(written.deliveries, key=lambda d: d.address)]


def sent_messages(server) -> list[list[dict]]:
    """What each call to the fake carried, as the recipients would read it."""
    return [sendgrid_messages(json.loads(r.data)) for r, _ in server.log if r.path == SENDGRID]


def expected(delivery: Delivery, name: str, code: str) -> dict:
    escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    links = tracking.Links(delivery.id)
    return {
        "to": delivery.address,
        "subject": f"Hello {name}",
        "text": f"Hi {name}, your code is {code}.\nSee you.",
        "html_starts": f"<p>Hi <b>{escaped}</b>, code {code}.</p>",
        "open": f"{links.base}/t/o/",
        "unsubscribe": f"<{url_for(delivery)}>",
    }


@pytest.mark.django_db
def test_a_bulk_batch_is_one_call_whose_substitutions_give_each_recipient_its_own_text(
    sendgrid, django_assert_num_queries
):
    sendgrid.expect_request(SENDGRID).respond_with_data("", status=202)
    ids = bulk_deliveries(PEOPLE)

    # The claim; the call's deliveries marked as being called; the successes in one statement.
    with django_assert_num_queries(3):
        outcomes = services.deliveries_attempt(ids)

    assert outcomes == {i: "sent" for i in ids}
    (call,) = sent_messages(sendgrid)
    assert len(call) == 4, "one call, one personalization per recipient"
    body = json.loads(sendgrid.log[0][0].data)
    assert all(p.get("substitutions") for p in body["personalizations"])
    by_address = {m["to"]: m for m in call}
    deliveries = {d.address: d for d in Delivery.objects.filter(id__in=ids)}
    for address, name, code in PEOPLE:
        delivery, got = deliveries[address], by_address[address]
        want = expected(delivery, name, code)
        assert got["subject"] == want["subject"]
        assert got["text"] == want["text"]
        assert want["html_starts"] in got["html"], got["html"]
        # Its own tracked link and open pixel, which only it can have (signed with its id).
        clicked = tracking.read_token(
            got["html"].split('href="')[1].split('"')[0].rsplit("/", 1)[1], tracking.CLICK
        )
        assert clicked is not None and str(clicked.delivery_id) == str(delivery.id)
        assert want["open"] in got["html"]
        # Its own unsubscribe link (the signed payload; the signature carries the second).
        unsubscribe = got["headers"]["List-Unsubscribe"]
        assert unsubscribe.rsplit(":", 2)[0] == want["unsubscribe"].rsplit(":", 2)[0]
        # Webhooks find the delivery by the per-recipient id SendGrid echoes back.
        assert got["custom_args"]["delivery_id"] == str(delivery.id)
        assert got["custom_args"]["anymail_id"] == delivery.provider_message_id
        assert (delivery.status, delivery.provider, delivery.attempts) == ("sent", "sendgrid", 1)
    assert len({d.provider_message_id for d in deliveries.values()}) == 4
    assert Event.objects.filter(type="sent", delivery_id__in=ids).count() == 4


@pytest.mark.django_db
def test_content_that_differs_beyond_the_variables_goes_one_call_per_recipient(sendgrid):
    sendgrid.expect_request(SENDGRID).respond_with_data("", status=202)
    content = {
        **CONTENT,
        "text": "Hi {{ name }}.{% if vip %} As a VIP you get 20% off all month.{% endif %}",
    }
    vips = {a: {"vip": a in ("ann@example.com", "cy@example.com")} for a, _, _ in PEOPLE}
    ids = bulk_deliveries(PEOPLE, content=content, extra=vips)

    assert services.deliveries_attempt(ids) == {i: "sent" for i in ids}

    calls = sent_messages(sendgrid)
    assert sorted(len(c) for c in calls) == [1, 1, 2], "the VIPs together, the others alone"
    (together,) = [c for c in calls if len(c) == 2]
    assert {m["to"] for m in together} == {"ann@example.com", "cy@example.com"}
    texts = {m["to"]: m["text"] for c in calls for m in c}
    assert texts == {
        "ann@example.com": "Hi Ann. As a VIP you get 20% off all month.",
        "bob@example.com": "Hi Bob O'Brien & <Co>.",
        "cy@example.com": "Hi Cy. As a VIP you get 20% off all month.",
        "di@example.com": "Hi Di.",
    }


@pytest.mark.django_db
def test_transactional_deliveries_stay_one_call_each(sendgrid):
    sendgrid.expect_request(SENDGRID).respond_with_data("", status=202)
    ids = bulk_deliveries(PEOPLE, priority="normal")

    assert services.deliveries_attempt(ids) == {i: "sent" for i in ids}
    assert [len(c) for c in sent_messages(sendgrid)] == [1, 1, 1, 1]


@pytest.mark.django_db
def test_a_5xx_on_the_batch_call_sends_each_delivery_down_the_retry_path(sendgrid):
    sendgrid.expect_request(SENDGRID).respond_with_data("upstream down", status=503)
    ids = bulk_deliveries(PEOPLE)

    assert services.deliveries_attempt(ids) == {i: "retry" for i in ids}

    assert len(sendgrid.log) == 1, "one call failed: no call per recipient after it"
    for delivery in Delivery.objects.filter(id__in=ids):
        assert (delivery.status, delivery.provider_attempts) == ("queued", 1)
        assert delivery.next_attempt_at is not None and "503" in delivery.error
    types = Event.objects.filter(delivery_id__in=ids).values_list("type", flat=True)
    assert sorted(types) == ["queued"] * 4 + ["retry"] * 4


@pytest.mark.django_db
def test_a_batch_refused_as_a_whole_is_sent_alone_so_one_bad_address_fails_alone(sendgrid):
    def answer(request):
        body = json.loads(request.data)
        if any(p["to"][0]["email"] == "bob@example.com" for p in body["personalizations"]):
            return Response('{"errors": [{"message": "Invalid address"}]}', status=400)
        return Response("", status=202)

    sendgrid.expect_request(SENDGRID).respond_with_handler(answer)
    ids = bulk_deliveries(PEOPLE)

    outcomes = services.deliveries_attempt(ids)

    by_address = {d.address: d for d in Delivery.objects.filter(id__in=ids)}
    assert {a: outcomes[str(d.id)] for a, d in by_address.items()} == {
        "ann@example.com": "sent",
        "bob@example.com": "failed",
        "cy@example.com": "sent",
        "di@example.com": "sent",
    }
    assert [len(c) for c in sent_messages(sendgrid)] == [4, 1, 1, 1, 1]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_worker_sends_a_bulk_request_in_one_call_and_webhooks_find_each_delivery(
    start_worker, httpserver, client, settings
):
    base = httpserver.url_for("/").rstrip("/")
    start_worker(
        {
            "EMAIL_PROVIDERS": "sendgrid",
            "SENDGRID_API_KEY": "SG.test",
            "SENDGRID_API_URL": f"{base}/sendgrid/v3/",
        },
        "batchp-",
    )
    httpserver.expect_request(SENDGRID).respond_with_data("", status=202)
    settings.CELERY_QUEUE_PREFIX = "batchp-"
    ids = bulk_deliveries(PEOPLE)

    def all_sent():
        return Delivery.objects.filter(id__in=ids, status="sent").count() == len(ids)

    wait_for(all_sent, 30, what="the bulk deliveries")
    (call,) = sent_messages(httpserver)
    assert sorted(m["to"] for m in call) == sorted(a for a, _, _ in PEOPLE)

    # SendGrid's event webhook echoes each personalization's custom args.
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "sendgrid": {
            "BACKEND": "notifications.providers.sendgrid.SendGridEmailProvider",
            "OPTIONS": {"API_KEY": "SG.k", "WEBHOOK_VERIFICATION_KEY": SENDGRID_PUBLIC},
        },
    }
    events = [
        sendgrid_event(
            m["custom_args"]["anymail_id"],
            "delivered",
            email=m["to"],
            delivery_id=m["custom_args"]["delivery_id"],
        )
        for m in call
    ]
    response = sendgrid_post(client, events)
    assert response.status_code == 200, response.content
    statuses = set(Delivery.objects.filter(id__in=ids).values_list("status", flat=True))
    assert statuses == {"delivered"}


def test_merge_carries_only_what_differs_in_variables():
    def message(to, name, extra=""):
        return Message(
            channel="email",
            to=to,
            subject=f"Hello {name}",
            text=f"Dear {name},\nyour order ships today.{extra}",
            variables=[name],
        )

    messages = [message("a@x.org", "Ann"), message("b@x.org", "Bob"), message("c@x.org", "Cy", "!")]
    merged = merge(messages)
    assert "Ann" not in merged.template["subject"] + merged.template["text"]
    first, second, third = merged.substitutions
    assert first is not None and second is not None and third is None


def test_smtp_keeps_one_connection_across_messages_and_opens_another_after_a_failure(
    smtp_server,  # noqa: F811 - the fixture imported above
):
    provider = SmtpEmailProvider("smtp", {"URL": f"smtp://u:p@127.0.0.1:{smtp_server.port}"})
    for n in range(3):
        provider.send(a_message(to=f"r{n}@example.com"))
    assert len(smtp_server.envelopes) == 3
    assert len(smtp_server.logins) == 1, "one connection (one login) for the three"

    smtp_server.data_reply = "451 4.3.0 try again"
    with pytest.raises(TransientProviderError):
        provider.send(a_message())
    smtp_server.data_reply = None
    provider.send(a_message(to="after@example.com"))
    assert len(smtp_server.logins) == 2, "the failed session was closed, a new one opened"
    assert smtp_server.envelopes[-1].rcpt_tos == ["after@example.com"]
