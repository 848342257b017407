"""The delivery log in Chromium, as support staff use it: resend a failed delivery from its
timeline and see the provider called (a real worker, SendGrid played by a local HTTP server),
cancel a scheduled delivery from its timeline and from its page, and search the log by address,
request id, idempotency key and user id.

The page server and the worker share a queue prefix of their own, so what a click enqueues goes
to that worker. Django refuses the ORM in the thread that runs Playwright's event loop: the test
reads the database before and after the browser block, and in between from a thread of its own
(``off_loop``). Skipped, saying why, where Debian's ``chromium`` or Playwright is missing.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.utils import timezone
from werkzeug import Response

from analytics.models import Event
from communication.models import User
from conftest import ROOT, chromium, needs_chromium, wait_for
from notifications import services
from notifications.models import Delivery, NotificationRequest

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

PREFIX = "console-"
SENDGRID = "/sendgrid/v3/mail/send"
PASSWORD = "correct horse battery staple"
SCREENSHOTS = ROOT / "var" / "screenshots"


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
    return User.objects.create_superuser("support", "support@example.com", PASSWORD)


class Console:
    """A logged-in page whose console errors and uncaught exceptions are recorded."""

    def __init__(self, browser, base_url: str):
        self.context = browser.new_context(
            base_url=base_url, viewport={"width": 1440, "height": 900}
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # The buttons ask before they act (a static script): staff say yes.
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.page.goto("/admin/login/?next=/admin/")
        self.page.fill("#id_username", "support")
        self.page.fill("#id_password", PASSWORD)
        self.page.click("[type=submit]")
        self.page.wait_for_url("**/admin/")

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
        calls.append(json.loads(request.get_data()))
        if len(calls) == 1:  # the first send is refused for good
            return Response('{"errors": [{"message": "invalid"}]}', status=400)
        return Response("", status=202)

    httpserver.expect_request(SENDGRID).respond_with_handler(sendgrid)
    settings.CELERY_QUEUE_PREFIX = PREFIX  # this process's sends go to the console's worker
    _, notification_id, original = send_email("resend-me@example.com")
    wait_for(lambda: status(original) == "failed", 30, what="the first send to fail")

    with chromium() as browser:
        console_page = Console(browser, console.url)
        page = console_page.page
        console_page.timeline(notification_id)
        card = page.locator(f"#delivery-{original}")
        assert card.get_attribute("data-status") == "failed"
        card.get_by_role("button", name="Resend").click()
        # Back on the timeline: the delivery now names its resend.
        page.locator(f"#delivery-{original} .resent-as").wait_for()

        # The worker sends it (the database between page actions, not inside a callback).
        resend = off_loop(
            wait_for,
            lambda: Delivery.objects.filter(
                notification__request__resent_from_id=original, status="sent"
            ).first(),
            30,
            0.1,
            "the resend to be sent",
        )
        page.reload()
        resent_as = page.locator(f"#delivery-{original} .resent-as")
        assert str(resend.id) in resent_as.inner_text()
        assert "sent" in resent_as.inner_text().lower()
        assert (
            page.locator(f"#delivery-{original}").get_by_role("button", name="Resend").count() == 0
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "delivery-timeline.png"), full_page=True)

        resent_as.get_by_role("link").first.click()
        page.wait_for_url(f"**/notification/{resend.notification_id}/timeline/**")
        resend_of = page.locator("#resend-of")
        assert str(original) in resend_of.inner_text()
        new_card = page.locator(f"#delivery-{resend.id}")
        assert new_card.get_attribute("data-status") == "sent"
        assert "sendgrid" in new_card.locator('[data-type="sent"]').inner_text()
        errors = console_page.errors

    assert errors == []
    # SendGrid was called again, for the same recipient and content.
    assert len(calls) == 2
    assert calls[1]["personalizations"][0]["to"][0]["email"] == "resend-me@example.com"
    assert calls[1]["subject"] == "Your invoice"
    request = NotificationRequest.objects.get(resent_from_id=original)
    assert request.caller == "admin:support"
    assert Event.objects.filter(delivery_id=original, type="resent").count() == 1


def test_cancel_a_scheduled_delivery_by_clicking(console, staff, settings):
    settings.CELERY_QUEUE_PREFIX = "void-"
    later = timezone.now() + dt.timedelta(days=1)
    _, on_timeline, first = send_email("later-1@example.com", scheduled_at=later)
    _, _, second = send_email("later-2@example.com", scheduled_at=later)

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
        errors = console_page.errors

    assert errors == []
    assert status(first) == status(second) == "cancelled"
    for delivery in (first, second):
        event = Event.objects.get(delivery_id=delivery, type="cancelled")
        assert event.data == {"by": "admin:support"}


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
