"""The console's webhook endpoints in Chromium: a dead message replayed with a click reaches
the receiver (a real worker, a live page server, a local receiver); a disabled endpoint shows
why and is re-enabled with a click. Skipped, saying why, where Chromium or Playwright is
missing."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from werkzeug import Request, Response

from communication.models import AuditEntry, User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium, wait_for
from notifications.models import WebhookEndpoint, WebhookMessage
from notifications.services import webhooks

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

PREFIX = "whconsole-"
ENV = {"WEBHOOKS_ALLOW_PRIVATE": "true", "WEBHOOKS_RETRY_SCHEDULE": "0.1,0.1"}


@pytest.fixture(scope="module")
def console(start_worker, start_live_asgi):
    start_worker(ENV, PREFIX)
    return start_live_asgi({"CELERY_QUEUE_PREFIX": PREFIX, **ENV})


def test_replay_a_dead_message_and_re_enable_an_endpoint(console, httpserver, settings):
    settings.CELERY_QUEUE_PREFIX = PREFIX
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    answers = [500, 500, 500]
    received: list[str] = []

    def handle(request: Request) -> Response:
        received.append(request.headers["Webhook-Id"])
        return Response("", status=answers.pop(0) if answers else 200)

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handle)
    User.objects.create_superuser("support", "support@example.com", STAFF_PASSWORD)
    endpoint, _ = webhooks.endpoint_create(
        owner="billing",
        scopes=["webhooks:manage"],
        url=httpserver.url_for("/hook"),
        events=["delivery.failed"],
    )
    webhooks.emit(
        [webhooks.Event(type="delivery.failed", caller="billing", data={"delivery_id": "d1"})]
    )
    message = wait_for(
        lambda: WebhookMessage.objects.filter(status="dead").first(), 30, what="dead letter"
    )
    assert len(received) == 3
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        disabled_at=message.created_at, disabled_reason="disabled after 3 consecutive failures"
    )

    since = timezone.localtime(message.created_at - dt.timedelta(minutes=1)).strftime(
        "%Y-%m-%dT%H:%M"
    )
    with chromium() as browser:
        staff = StaffBrowser(browser, console.url, "support")
        page = staff.page
        staff.goto(f"/admin/notifications/webhookendpoint/{endpoint.pk}/change/")
        row = page.locator(f"#message-{message.event_id}")
        assert row.locator(".message-status").inner_text().strip().lower() == "dead"
        assert "500" in row.inner_text()
        assert "3 consecutive failures" in page.locator("#disabled-reason").inner_text()
        page.click("#endpoint-summary button[name=enable]")
        page.wait_for_selector("text=Enabled: what waited")
        page.locator(f"#message-{message.event_id} button[name=replay]").click()
        page.wait_for_selector(f"text={message.event_id} will be sent again.")
        for _ in range(100):
            page.reload()
            status = row.locator(".message-status").inner_text().strip().lower()
            if status == "delivered":
                break
            page.wait_for_timeout(100)
        assert status == "delivered"
        assert "200" in row.inner_text()
        # Everything since a time (the console's clock: its time zone).
        page.fill("#replay-since-at", since)
        page.click("#replay-since button[name=replay-since]")
        page.wait_for_selector("text=1 message(s) will be sent again.")
        assert staff.errors == []

    wait_for(lambda: len(received) == 5, 30, what="the replay since")
    assert received == [message.event_id] * 5
    actions = set(
        AuditEntry.objects.filter(object_id=str(endpoint.pk)).values_list("action", "actor")
    )
    staff_actions = {action for action, actor in actions if "support" in actor}
    assert staff_actions >= {"webhook_endpoint.replay", "webhook_endpoint.update"}
