"""The delivery log in Chromium, as support staff use it: resend a failed delivery from its
timeline and from its page and see the provider called (a real worker, SendGrid played by a local
HTTP server); cancel what is not yet sent from a timeline, a delivery's page, a whole notification
and the log's bulk action; take an address off the suppression list; send a test of a draft
template version; search the log by address, request id, idempotency key and user id.

The page server and the worker share a queue prefix of their own, so what a click enqueues goes
to that worker. Django refuses the ORM in the thread that runs Playwright's event loop: the test
reads the database before and after the browser block, and in between from a thread of its own
(``off_loop``). Skipped, saying why, where Debian's ``chromium`` or Playwright is missing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.utils import timezone
from werkzeug import Response

from analytics.models import Event
from communication.compliance.keyed import lookup_hash
from communication.models import User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium, wait_for
from notifications import services
from notifications.models import Delivery, NotificationRequest, Suppression
from templates_app import services as template_services
from templates_app.models import Template

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

PREFIX = "console-"
SENDGRID = "/sendgrid/v3/mail/send"


@pytest.fixture(scope="module")
def console(make_httpserver, start_worker, start_live_asgi):
    """A page server and a worker on the ``console-`` queues; the worker's email goes to SendGrid,
    played by the session's local HTTP server."""
    base = make_httpserver.url_for("/").rstrip("/")
    start_worker(
        {
            "EMAIL_PROVIDERS": "sendgrid",
            "SENDGRID_API_KEY": "SG.test",
            "SENDGRID_API_URL": f"{base}/sendgrid/v3/",
            # Breakers live in Redis: this worker's start from a clean slate.
            "CACHE_KEY_PREFIX": f"console-{uuid.uuid4().hex[:8]}",
        },
        PREFIX,
    )
    return start_live_asgi({"CELERY_QUEUE_PREFIX": PREFIX})


@pytest.fixture
def staff(db):
    return User.objects.create_superuser("support", "support@example.com", STAFF_PASSWORD)


class Console(StaffBrowser):
    """The support staff member's console."""

    def __init__(self, browser, base_url: str):
        super().__init__(browser, base_url, "support")

    def timeline(self, notification_id) -> None:
        self.page.goto(f"/admin/notifications/notification/{notification_id}/timeline/")


def send_email(address: str, **extra) -> tuple[str, str, str]:
    outcome = services.notification_send(
        caller="billing",
        idempotency_key=extra.pop("key", ""),
        payload={
            "recipients": [{"email": address}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Your invoice", "body": "Invoice 42 is ready."},
            "data": {},
            **extra,
        },
    )
    notification = outcome.body["notifications"][0]
    return outcome.body["request_id"], notification["id"], notification["deliveries"][0]["id"]


def status(delivery_id) -> str:
    return Delivery.objects.get(id=delivery_id).status


def off_loop(fn, *args):
    """``fn(*args)`` from inside the browser block: in a thread with no event loop, with its own
    database connection, closed after."""

    def run():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def test_resend_a_failed_delivery_from_its_timeline(console, staff, httpserver, settings):
    calls: list[dict] = []

    def sendgrid(request):
        body = json.loads(request.get_data())
        to = body["personalizations"][0]["to"][0]["email"]
        calls.append(body)
        if sum(1 for c in calls if c["personalizations"][0]["to"][0]["email"] == to) == 1:
            # Each address's first send is refused for good.
            return Response('{"errors": [{"message": "invalid"}]}', status=400)
        return Response("", status=202)

    httpserver.expect_request(SENDGRID).respond_with_handler(sendgrid)
    settings.CELERY_QUEUE_PREFIX = PREFIX  # this process's sends go to the console's worker
    _, notification_id, original = send_email("resend-me@example.com")
    _, _, from_its_page = send_email("resend-me-too@example.com")
    wait_for(
        lambda: status(original) == status(from_its_page) == "failed",
        30,
        what="the first sends to fail",
    )

    def sent_resend(delivery_id) -> Delivery | None:
        return Delivery.objects.filter(
            notification__request__resent_from_id=delivery_id, status="sent"
        ).first()

    with chromium() as browser:
        console_page = Console(browser, console.url)
        page = console_page.page
        console_page.timeline(notification_id)
        card = page.locator(f"#delivery-{original}")
        assert card.get_attribute("data-status") == "failed"
        card.get_by_role("button", name="Resend").click()
        # Back on the timeline: the delivery now names its resend.
        page.locator(f"#delivery-{original} .resent-as").wait_for()

        # The worker sends it.
        resend = off_loop(wait_for, lambda: sent_resend(original), 30, 0.1, "the resend sent")
        page.reload()
        resent_as = page.locator(f"#delivery-{original} .resent-as")
        assert str(resend.id) in resent_as.inner_text()
        assert "sent" in resent_as.inner_text().lower()
        assert card.get_by_role("button", name="Resend").count() == 0
        console_page.screenshot("delivery-timeline")

        resent_as.get_by_role("link").first.click()
        page.wait_for_url(f"**/notification/{resend.notification_id}/timeline/**")
        resend_of = page.locator("#resend-of")
        assert str(original) in resend_of.inner_text()
        new_card = page.locator(f"#delivery-{resend.id}")
        assert new_card.get_attribute("data-status") == "sent"
        assert "sendgrid" in new_card.locator('[data-type="sent"]').inner_text()

        # From the delivery's own page: its Resend is a form of its own, outside the change form.
        page.goto(f"/admin/notifications/delivery/{from_its_page}/change/")
        page.locator("#delivery-summary").get_by_role("button", name="Resend").click()
        page.locator(f"#delivery-{from_its_page} .resent-as").wait_for()
        second = off_loop(wait_for, lambda: sent_resend(from_its_page), 30, 0.1, "the resend")
        errors = console_page.errors

    assert errors == []
    # SendGrid was called again, for the same recipients and content.
    again = [c for c in calls[2:]]
    assert sorted(c["personalizations"][0]["to"][0]["email"] for c in again) == [
        "resend-me-too@example.com",
        "resend-me@example.com",
    ]
    assert {c["subject"] for c in again} == {"Your invoice"}
    request = NotificationRequest.objects.get(resent_from_id=original)
    assert request.caller == "admin:support"
    assert Event.objects.filter(delivery_id=original, type="resent").count() == 1
    assert second.notification.request.resent_from_id == uuid.UUID(from_its_page)


def test_cancel_what_is_not_yet_sent_by_clicking(console, staff, settings, make_user_token):
    settings.CELERY_QUEUE_PREFIX = "void-"
    later = timezone.now() + dt.timedelta(days=1)
    _, on_timeline, first = send_email("later-1@example.com", scheduled_at=later)
    _, _, second = send_email("later-2@example.com", scheduled_at=later)
    _, _, from_the_log = send_email("later-3@example.com", scheduled_at=later)
    make_user_token("two-channels", email="two@example.com", phone="+33633333333")
    outcome = services.notification_send(
        caller="billing",
        payload={
            "recipients": [{"user_id": "two-channels"}],
            "category": "alerts",
            "channels": ["email", "sms"],
            "content": {"subject": "Later", "body": "Later."},
            "scheduled_at": later,
        },
    )
    both = outcome.body["notifications"][0]["id"]
    suppression = services.suppression_add(
        channel="email", address="works-again@example.com", reason="hard_bounce"
    )

    with chromium() as browser:
        console_page = Console(browser, console.url)
        page = console_page.page
        console_page.timeline(on_timeline)
        card = page.locator(f"#delivery-{first}")
        assert card.get_attribute("data-status") == "scheduled"
        card.get_by_role("button", name="Cancel").click()
        page.locator(f'#delivery-{first}[data-status="cancelled"]').wait_for()
        assert page.get_by_text("Cancelled: it will not be sent.").count() == 1
        assert card.get_by_role("button", name="Cancel").count() == 0

        # From the delivery's own page: its Cancel is a form of its own, outside the change form.
        page.goto(f"/admin/notifications/delivery/{second}/change/")
        page.locator("#delivery-summary").get_by_role("button", name="Cancel").click()
        page.locator(f'#delivery-{second}[data-status="cancelled"]').wait_for()

        # Every channel of one notification at once.
        console_page.timeline(both)
        page.get_by_role("button", name="Cancel all not yet sent").click()
        page.get_by_text("2 delivery(ies) cancelled.").wait_for()
        assert page.locator('.ntl-delivery[data-status="cancelled"]').count() == 2

        # From the delivery log: the bulk action on the selected rows.
        page.goto("/admin/notifications/delivery/?q=later-3@example.com")
        page.locator("#result_list input.action-select").check()
        page.select_option("select[name=action]", "cancel_selected")
        page.get_by_role("button", name="Run").click()
        page.get_by_text("1 delivery(ies) cancelled.").wait_for()

        # An address on the suppression list taken off it (the resend note's advice).
        page.goto(f"/admin/notifications/suppression/{suppression.pk}/change/")
        page.get_by_role("link", name="Delete suppression").click()
        page.get_by_role("button", name=re.compile("sure")).click()
        page.wait_for_url("**/suppression/")
        errors = console_page.errors

    assert errors == []
    assert status(first) == status(second) == status(from_the_log) == "cancelled"
    for delivery in (first, second, from_the_log):
        event = Event.objects.get(delivery_id=delivery, type="cancelled")
        assert event.data == {"by": "admin:support", "reason": "cancelled by admin:support"}
    assert set(Delivery.objects.filter(notification_id=both).values_list("status", flat=True)) == {
        "cancelled"
    }
    assert not Suppression.objects.filter(pk=suppression.pk).exists()


def test_search_the_delivery_log(console, staff, settings, make_user_token):
    settings.CELERY_QUEUE_PREFIX = "void-"
    make_user_token("cust-42", email="cust42@example.com")
    _, _, by_key = send_email("keyed@example.com", key="order-1042")
    by_address_request, _, by_address = send_email("Case.Open@Example.com")
    outcome = services.notification_send(
        caller="billing",
        payload={
            "recipients": [{"user_id": "cust-42"}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Hi", "body": "Hello"},
            "data": {},
        },
    )
    by_user = outcome.body["notifications"][0]["deliveries"][0]["id"]
    for i in range(3):
        send_email(f"noise{i}@example.com")

    found: dict[str, list[str]] = {}
    with chromium() as browser:
        console_page = Console(browser, console.url)
        page = console_page.page
        page.goto("/admin/notifications/delivery/")
        for term in (
            "case.open@example.com",
            by_address_request,
            "order-1042",
            "cust-42",
            "case.open",
        ):
            page.fill("#searchbar", term)
            page.press("#searchbar", "Enter")
            page.wait_for_url("**/delivery/?q=*")
            links = page.locator("#result_list a[href*='#delivery-']").all()
            found[term] = [link.get_attribute("href").split("#delivery-")[1] for link in links]
        errors = console_page.errors

    assert errors == []
    assert found["case.open@example.com"] == [by_address]
    assert found[by_address_request] == [by_address]
    assert found["order-1042"] == [by_key]
    assert found["cust-42"] == [by_user]
    assert found["case.open"] == [], "exact values only"


def test_send_a_test_of_a_draft_by_clicking(console, staff, httpserver, settings):
    subjects: list[str] = []

    def sendgrid(request):
        subjects.append(json.loads(request.get_data())["subject"])
        return Response("", status=202)

    httpserver.expect_request(SENDGRID).respond_with_handler(sendgrid)
    draft = template_services.version_create(
        template=Template.objects.get(key="welcome-email"),
        actor="staff:writer",
        language="en",
        subject="Draft: welcome to {{ product }}, {{ name }}",
        html="<p>Hello {{ name }}</p>",
        text="Hello {{ name }}",
    )

    with chromium() as browser:
        console_page = Console(browser, console.url)
        page = console_page.page
        page.goto(f"/admin/notifications/delivery/send-test/?template_version={draft.pk}")
        assert "welcome-email" in page.locator("#test-version").inner_text()
        assert "Draft: welcome to Acme, Ada" in page.locator("#test-preview").inner_text()
        assert page.input_value("input[name=to]") == "support@example.com"
        page.get_by_role("button", name="Send the test").click()
        page.wait_for_url("**/timeline/**")
        off_loop(
            wait_for,
            lambda: Delivery.objects.filter(
                address_hash=lookup_hash("support@example.com"), status="sent"
            ).first(),
            30,
            0.1,
            "the test to be sent",
        )
        errors = console_page.errors

    assert errors == []
    assert subjects == ["Draft: welcome to Acme, Ada"]
    draft.refresh_from_db()
    assert draft.status == "draft" and not draft.is_live
