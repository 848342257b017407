"""What the delivery pipeline writes to the event table for analytics: every event of a delivery
with its user, template family, version and variant; sent events with their cost and latencies;
email links tracked where the category allows it, and the opens and clicks they bring back;
provider events at the provider's time."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from decimal import Decimal

import lxml.html
import pytest
from django.test import Client
from django.utils import timezone
from werkzeug import Response

from analytics import tracking
from analytics.models import Event
from notifications import rendering, services, unsubscribe
from notifications.models import (
    Delivery,
    NotificationRequest,
    OutboxMessage,
    Suppression,
    suppression_hash,
)
from notifications.tests.test_webhooks import SENDGRID_PUBLIC, sendgrid_event, sendgrid_post
from templates_app import services as template_services
from templates_app.models import TemplateVariant

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

BASE = "https://comm.example.com"
SENDGRID = "/sendgrid/v3/mail/send"
SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
LINKS_HTML = (
    "<p>Hello,</p>"
    '<p><a href="https://shop.example.com/spring?utm=mail&amp;x=1">See the offer</a> · '
    '<a href="mailto:help@example.com">Write to us</a> · <a href="tel:+33123456789">Call</a> · '
    f'<a href="{BASE}/u/keep-me">Unsubscribe</a> · <a href="#top">Top</a></p>'
)


@pytest.fixture(autouse=True)
def public_base(settings):
    settings.PUBLIC_BASE_URL = BASE
    settings.CELERY_QUEUE_PREFIX = "void-"  # nothing consumes these queues: we deliver in-process


@pytest.fixture
def sendgrid(settings, httpserver):
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "sendgrid": {
            "BACKEND": "notifications.providers.sendgrid.SendGridEmailProvider",
            "OPTIONS": {
                "API_KEY": "SG.k",
                "API_URL": httpserver.url_for("/sendgrid/v3/"),
                "WEBHOOK_VERIFICATION_KEY": SENDGRID_PUBLIC,
            },
        },
    }
    settings.EMAIL_PROVIDERS = ["sendgrid"]
    settings.PROVIDER_PRICES = {
        "sendgrid": {"email": 0.0004},
        "outbox": {"sms": {"+33": 0.07, "+336": 0.075, "*": 0.05}},
    }
    counter = iter(range(1, 10_000))
    httpserver.expect_request(SENDGRID).respond_with_handler(
        lambda request: _sendgrid_accepts(next(counter))
    )
    return httpserver


def _sendgrid_accepts(n: int):
    return Response("", status=202, headers={"X-Message-Id": f"sg-{n}"})


def sent_html(server) -> str:
    """The HTML part of the last message the fake SendGrid received."""
    body = json.loads(server.log[-1][0].get_data())
    return next(c["value"] for c in body["content"] if c["type"] == "text/html")


@pytest.fixture
def spring_sale(db, django_capture_on_commit_callbacks):
    """A template family ``spring-sale`` (email) whose one active variant ``b`` every recipient
    gets, live through the template services."""
    template = template_services.template_create(
        actor="service:cms",
        key="spring-sale",
        name="Spring sale",
        category="reminders",
        channel="email",
    )
    variant = template_services.variant_save(
        variant=TemplateVariant(template=template, key="b", weight=1)
    )
    for line in (None, variant):
        version = template_services.version_create(
            template=template,
            actor="service:cms",
            language="en",
            variant=line,
            subject="Spring" + (" (B)" if line else ""),
            html=LINKS_HTML,
            text="See https://shop.example.com/spring",
        )
        template_services.version_submit(version=version, actor="service:cms")
        with django_capture_on_commit_callbacks(execute=True):
            template_services.version_approve(version=version, actor="service:cms-review")
    return template


def send(sender, **body):
    body.setdefault("category", "reminders")
    body.setdefault("channels", ["email"])
    response = sender.post("/api/v1/notifications", body, format="json")
    assert response.status_code == 202, response.content
    return [d["id"] for n in response.json()["notifications"] for d in n["deliveries"]]


def event_of(delivery_id, type_: str) -> Event:
    return Event.objects.get(delivery_id=delivery_id, type=type_)


# ------------------------------------------------------------------------------- sent events


def test_sent_event_carries_user_template_version_variant_cost_and_latencies(
    sender, alice, sendgrid, spring_sale
):
    (delivery_id,) = send(sender, recipients=[{"user_id": "alice"}], template="spring-sale")
    queued = event_of(delivery_id, "queued")
    assert (queued.user_id, queued.template, queued.variant) == (alice.id, "spring-sale", "")
    # The request came in 8 s ago and the delivery was queued 5 s ago (a busy queue).
    now = timezone.now()
    NotificationRequest.objects.update(created_at=now - dt.timedelta(seconds=8))
    Delivery.objects.filter(id=delivery_id).update(queued_at=now - dt.timedelta(seconds=5))

    assert services.delivery_attempt(delivery_id) == "sent"

    delivery = Delivery.objects.get(id=delivery_id)
    sent = event_of(delivery_id, "sent")
    assert (sent.channel, sent.provider, sent.category) == ("email", "sendgrid", "reminders")
    assert (sent.user_id, sent.template, sent.variant) == (alice.id, "spring-sale", "b")
    assert sent.template_version == delivery.template_version is not None
    assert (sent.campaign_id, sent.step_id, sent.run_id) == (None, None, None)
    assert sent.cost == Decimal("0.0004")
    assert 5_000 <= sent.queue_wait_ms < 5_000 + 5_000
    assert 8_000 <= sent.api_to_provider_ms < 8_000 + 5_000
    assert sent.api_to_provider_ms > sent.queue_wait_ms + sent.latency_ms
    assert "(B)" in json.loads(sendgrid.log[-1][0].get_data())["subject"]


def test_a_scheduled_delivery_counts_its_latency_from_its_time(sender, alice, sendgrid):
    (delivery_id,) = send(
        sender,
        recipients=[{"user_id": "alice"}],
        content={"subject": "Later", "body": "Soon."},
        scheduled_at=(timezone.now() + dt.timedelta(hours=2)).isoformat(),
    )
    # Two hours on, the sweep releases it.
    released = timezone.now() - dt.timedelta(seconds=1)
    NotificationRequest.objects.update(created_at=released - dt.timedelta(hours=2))
    Delivery.objects.filter(id=delivery_id).update(scheduled_for=released)
    assert services.deliveries_sweep()["released"] == 1
    assert event_of(delivery_id, "queued").user_id == alice.id

    services.delivery_attempt(delivery_id)

    sent = event_of(delivery_id, "sent")
    assert 1_000 <= sent.api_to_provider_ms < 10_000, "from its time, not from the API call"


def test_sms_cost_by_destination_prefix_and_segments(sender, alice, sendgrid, settings):
    settings.SMS_PROVIDERS = []  # the development outbox, priced as "outbox"
    long_text = "Your parcel is on its way. " * 7  # 189 GSM-7 characters: two segments
    (delivery_id,) = send(
        sender, recipients=[{"user_id": "alice"}], channels=["sms"], content={"text": long_text}
    )
    services.delivery_attempt(delivery_id)
    sent = event_of(delivery_id, "sent")
    assert OutboxMessage.objects.get(channel="sms").to == "+33612345678"
    assert sent.data["segments"] == 2
    assert sent.cost == Decimal("0.150"), "+336 (0.075) beats +33, times two segments"

    (other,) = send(
        sender,
        recipients=[{"phone": "+4915112345678"}],
        channels=["sms"],
        content={"text": "Grüße 🌷"},  # UCS-2, one segment
    )
    services.delivery_attempt(other)
    assert event_of(other, "sent").cost == Decimal("0.05"), "no prefix matches: '*'"


def test_without_a_price_the_cost_is_unknown(sender, alice, sendgrid, settings):
    settings.PROVIDER_PRICES = {}
    (delivery_id,) = send(sender, recipients=[{"user_id": "alice"}], content={"body": "x"})
    services.delivery_attempt(delivery_id)
    assert event_of(delivery_id, "sent").cost is None


def test_cancelled_and_failed_events_carry_the_dimensions_too(sender, alice, spring_sale):
    (later,) = send(
        sender,
        recipients=[{"user_id": "alice"}],
        template="spring-sale",
        scheduled_at=(timezone.now() + dt.timedelta(hours=1)).isoformat(),
    )
    request_id = Delivery.objects.get(id=later).notification.request_id
    services.request_cancel(caller="billing", request_id=request_id)
    cancelled = event_of(later, "cancelled")
    assert (cancelled.user_id, cancelled.template) == (alice.id, "spring-sale")


# ------------------------------------------------------------------------------ link tracking


def test_an_email_of_a_tracked_category_has_its_links_rewritten_and_a_pixel(
    sender, alice, sendgrid
):
    (delivery_id,) = send(
        sender,
        recipients=[{"user_id": "alice"}],
        content={"subject": "Offer", "html": LINKS_HTML, "text": "See the offer"},
    )
    services.delivery_attempt(delivery_id)

    html = sent_html(sendgrid)
    doc = lxml.html.document_fromstring(html)
    hrefs = [a.get("href") for a in doc.iter("a")]
    assert hrefs[0].startswith(f"{BASE}/t/c/")
    assert hrefs[1:] == ["mailto:help@example.com", "tel:+33123456789", f"{BASE}/u/keep-me", "#top"]
    (pixel,) = doc.iter("img")
    assert pixel.get("src").startswith(f"{BASE}/t/o/") and pixel.get("src").endswith(".gif")
    assert (pixel.get("width"), pixel.get("height"), pixel.get("alt")) == ("1", "1", "")
    assert html.startswith("<html><head></head><body><p>Hello,</p>"), "no doctype added"
    assert (
        doc.text_content()
        == lxml.html.fragment_fromstring(LINKS_HTML, create_parent="div").text_content()
    )


def test_an_email_of_a_category_without_tracking_has_neither(sender, alice, sendgrid):
    (delivery_id,) = send(
        sender,
        recipients=[{"user_id": "alice"}],
        category="alerts",  # tracking_allowed=False
        content={"subject": "Disk", "html": LINKS_HTML, "text": "x"},
    )
    services.delivery_attempt(delivery_id)
    html = sent_html(sendgrid)
    assert "/t/c/" not in html and "/t/o/" not in html
    assert "<img" not in html
    doc = lxml.html.document_fromstring(html)
    assert [a.get("href") for a in doc.iter("a")] == [
        a.get("href")
        for a in lxml.html.fragment_fromstring(LINKS_HTML, create_parent="div").iter("a")
    ]


def test_a_whole_document_keeps_its_doctype_and_gets_the_pixel_in_its_body(sender, alice, sendgrid):
    page = (
        "<!DOCTYPE html><html><head><title>Offer</title></head><body>"
        '<a href="https://shop.example.com/">Shop</a><p>Bye</p></body></html>'
    )
    (delivery_id,) = send(
        sender, recipients=[{"user_id": "alice"}], content={"subject": "Offer", "html": page}
    )
    services.delivery_attempt(delivery_id)
    html = sent_html(sendgrid)
    assert html.startswith("<!DOCTYPE html>")
    body = lxml.html.document_fromstring(html).find("body")
    assert body[0].get("href").startswith(f"{BASE}/t/c/")
    assert body[-1].tag == "img" and "/t/o/" in body[-1].get("src")


def test_a_tracked_batch_costs_no_query_more_than_an_untracked_one(
    sender, alice, sendgrid, django_assert_num_queries
):
    """Rewriting links reads nothing: the category comes with the claim (the claim, one
    statement per provider call and the last record, as for any batch)."""
    content = {"subject": "Offer", "html": LINKS_HTML}
    services.deliveries_attempt(
        send(sender, recipients=[{"email": "w@example.com"}], content=content)
    )
    ids = send(
        sender, recipients=[{"email": f"r{i}@example.com"} for i in range(10)], content=content
    )
    with django_assert_num_queries(2 + len(ids)):
        outcomes = services.deliveries_attempt(ids)
    assert set(outcomes.values()) == {"sent"}


# --------------------------------------------------------------------- opens and clicks, live


def test_a_real_open_and_click_through_a_live_send(sender, alice, sendgrid, spring_sale):
    (delivery_id,) = send(sender, recipients=[{"user_id": "alice"}], template="spring-sale")
    services.delivery_attempt(delivery_id)
    html = sent_html(sendgrid)
    pixel = re.search(r'src="([^"]+/t/o/[^"]+\.gif)"', html).group(1)
    link = re.search(r'href="([^"]+/t/c/[^"]+)"', html).group(1)
    client = Client()

    assert client.get(pixel.removeprefix(BASE), HTTP_USER_AGENT=SAFARI).status_code == 200
    response = client.get(link.removeprefix(BASE), HTTP_USER_AGENT=SAFARI)

    assert response.status_code == 302
    assert response["Location"] == "https://shop.example.com/spring?utm=mail&x=1"
    sent = event_of(delivery_id, "sent")
    for type_ in ("opened", "clicked"):
        event = event_of(delivery_id, type_)
        assert event.machine is False
        assert (event.channel, event.provider, event.category) == ("email", "sendgrid", "reminders")
        assert (event.template, event.variant, event.user_id) == ("spring-sale", "b", alice.id)
        assert event.template_version == sent.template_version
        assert event.notification_id == sent.notification_id
        assert event.cost is None, "only the sent event costs"


def test_apple_privacy_prefetch_of_a_live_send_is_a_machine_open(sender, alice, sendgrid):
    (delivery_id,) = send(sender, recipients=[{"user_id": "alice"}], content={"html": LINKS_HTML})
    services.delivery_attempt(delivery_id)
    pixel = re.search(r'src="([^"]+/t/o/[^"]+\.gif)"', sent_html(sendgrid)).group(1)
    Client().get(pixel.removeprefix(BASE), HTTP_USER_AGENT="Mozilla/5.0", REMOTE_ADDR="17.58.1.9")
    opened = event_of(delivery_id, "opened")
    assert (opened.machine, opened.data["reason"]) == (True, "apple_mpp")


def test_an_unsubscribe_carries_the_deliverys_dimensions(sender, alice, sendgrid, spring_sale):
    (delivery_id,) = send(sender, recipients=[{"user_id": "alice"}], template="spring-sale")
    services.delivery_attempt(delivery_id)
    delivery = Delivery.objects.select_related("notification").get(id=delivery_id)

    response = Client().post(
        f"/u/{unsubscribe.token_for(delivery)}", {"List-Unsubscribe": "One-Click"}
    )

    assert response.status_code == 200
    event = event_of(delivery_id, "unsubscribed")
    assert (event.user_id, event.template, event.variant) == (alice.id, "spring-sale", "b")
    assert (event.channel, event.category, event.data) == (
        "email",
        "reminders",
        {"source": "one-click"},
    )


# ----------------------------------------------------------------------- provider webhooks


@pytest.fixture
def sent_by_sendgrid(sender, alice, sendgrid, spring_sale):
    (delivery_id,) = send(sender, recipients=[{"user_id": "alice"}], template="spring-sale")
    services.delivery_attempt(delivery_id)
    return Delivery.objects.get(id=delivery_id)


def test_a_late_bounce_is_recorded_at_the_providers_time(client, sent_by_sendgrid):
    delivery = sent_by_sendgrid
    two_days_ago = int(time.time()) - 2 * 86400
    response = sendgrid_post(
        client,
        [
            sendgrid_event(
                delivery.provider_message_id,
                "bounce",
                type="bounce",
                timestamp=two_days_ago,
                reason="550 5.1.1 unknown user",
            )
        ],
    )
    assert response.status_code == 200
    bounced = event_of(delivery.id, "bounced")
    assert bounced.occurred_at == dt.datetime.fromtimestamp(two_days_ago, tz=dt.UTC)
    assert (bounced.template, bounced.variant, bounced.user_id) == (
        "spring-sale",
        "b",
        delivery.notification.user_id,
    )
    assert bounced.data["bounce"] == "hard"
    assert Suppression.objects.filter(address_hash=suppression_hash("alice@example.com")).exists()


def test_a_providers_time_is_clamped_to_the_last_30_days(client, sent_by_sendgrid):
    delivery = sent_by_sendgrid
    before = timezone.now()
    sendgrid_post(
        client,
        [
            sendgrid_event(delivery.provider_message_id, "delivered", timestamp=1),  # 1970
            sendgrid_event(
                delivery.provider_message_id, "open", timestamp=int(time.time()) + 86400
            ),
        ],
    )
    delivered = event_of(delivery.id, "delivered")
    assert abs(delivered.occurred_at - (before - dt.timedelta(days=30))) < dt.timedelta(minutes=1)
    assert delivered.data["occurred_at"].startswith("1970-01-01"), "the provider's own time kept"
    opened = event_of(delivery.id, "opened")
    assert before <= opened.occurred_at <= timezone.now(), "never in the future"


def test_a_soft_bounce_is_a_bounce_that_suppresses_nothing(client, sent_by_sendgrid):
    delivery = sent_by_sendgrid
    sendgrid_post(
        client,
        [sendgrid_event(delivery.provider_message_id, "bounce", type="blocked", reason="421")],
    )
    bounced = event_of(delivery.id, "bounced")
    assert bounced.data["bounce"] == "soft"
    delivery.refresh_from_db()
    assert delivery.status == "failed", "SendGrid does not retry a blocked message"
    assert not Suppression.objects.exists()


def test_provider_opens_by_machines_are_flagged(client, sent_by_sendgrid):
    delivery = sent_by_sendgrid
    sendgrid_post(
        client,
        [
            sendgrid_event(delivery.provider_message_id, "open", sg_machine_open=True),
            sendgrid_event(
                delivery.provider_message_id, "open", useragent="Mozilla/5.0", ip="17.1.1.1"
            ),
            sendgrid_event(
                delivery.provider_message_id,
                "click",
                url="https://shop.example.com/",
                useragent="Mimecast URL Protect",
            ),
            sendgrid_event(
                delivery.provider_message_id, "open", useragent=SAFARI, ip="203.0.113.4"
            ),
        ],
    )
    got = list(
        Event.objects.filter(delivery_id=delivery.id, type__in=["opened", "clicked"])
        .order_by("id")
        .values_list("type", "machine", "data__reason")
    )
    assert got == [
        ("opened", True, "provider"),
        ("opened", True, "apple_mpp"),
        ("clicked", True, "scanner:mimecast"),
        ("opened", False, ""),
    ]
    assert all("ip" not in e.data for e in Event.objects.filter(delivery_id=delivery.id)), (
        "the recipient's address is not kept"
    )
    assert event_of(delivery.id, "clicked").template == "spring-sale"


# ------------------------------------------------------------------------ the rewriter alone


def test_the_rewriter_keeps_a_fragment_a_fragment_and_leaves_what_it_cannot_sign():
    long_url = "https://example.com/" + "a" * 2100
    html = (
        'Hi <a href="https://example.com/x">x</a>'
        f'<a href="{long_url}">long</a><a href="javascript:alert(1)">js</a>'
        '<a href=" HTTPS://Example.com/Y ">y</a><a>no href</a> bye'
    )
    out = rendering.track_links(html, delivery_id="0190d6a4-54c4-7d5e-9c1a-5d0b33fa8e01")
    assert out.startswith("Hi <a href=") and "bye<img" in out
    doc = lxml.html.fragment_fromstring(out, create_parent="div")
    hrefs = [a.get("href") for a in doc.iter("a")]
    assert hrefs[0].startswith(f"{BASE}/t/c/")
    assert hrefs[1:3] == [long_url, "javascript:alert(1)"], "left as they were"
    assert hrefs[3].startswith(f"{BASE}/t/c/") and hrefs[4] is None
    token = hrefs[3].rsplit("/", 1)[1]
    assert tracking.read_token(token, tracking.CLICK).url == "HTTPS://Example.com/Y"


def test_html_lxml_cannot_read_is_sent_untracked():
    assert rendering.track_links("", delivery_id=uuid.uuid4()) == ""
    weird = '<?xml version="1.0" encoding="utf-8"?><html><body><a href="https://a.b/">a</a>'
    assert rendering.track_links(weird, delivery_id=uuid.uuid4()) == weird
    assert rendering.track_links("  \n", delivery_id=uuid.uuid4()) == "  \n"
