"""Campaigns in the staff console, clicked through in Chromium: a staff member builds a campaign
of two steps, sees the segment's size, previews the message for a recipient, sends a test to
themself, schedules, pauses, resumes and cancels it with the page's buttons, and watches the
progress bar follow deliveries written while the page is open (polled, never reloaded). The
author of a campaign waiting for approval finds the Approve button refused.

Skips, saying why, where Debian's chromium or Playwright is missing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from campaigns.models import Campaign, Segment
from communication.models import User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium
from notifications.models import Delivery, Notification, NotificationRequest
from templates_app import services as template_services

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def _newsletter() -> None:
    template = template_services.template_create(
        actor="service:cms",
        key="newsletter",
        name="Newsletter",
        category="marketing",
        channel="email",
    )
    version = template_services.version_create(
        template=template,
        actor="service:cms",
        language="en",
        subject="News for {{ recipient.user_id if recipient is defined else 'you' }}",
        html="<p>News</p>",
        text="News",
    )
    template_services.version_submit(version=version, actor="service:cms")
    template_services.version_approve(version=version, actor="service:cms-review")


def _in_thread(fn, *args):
    """Runs ``fn`` on a thread of its own: the ORM refuses to run in Playwright's event loop."""

    def run():
        try:
            return fn(*args)
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def _deliveries(campaign_id, statuses) -> list:
    request = NotificationRequest.objects.create(
        caller=f"campaign:{campaign_id}", category_id="marketing", campaign_id=campaign_id
    )
    ids = []
    for i, status in enumerate(statuses):
        notification = Notification.objects.create(
            request=request, recipient={"email": f"x{i}@example.com"}, category_id="marketing"
        )
        ids.append(
            Delivery.objects.create(notification=notification, channel="email", status=status).id
        )
    return ids


def _deliver(ids) -> None:
    Delivery.objects.filter(id__in=ids).update(status="delivered")


def test_build_schedule_watch_pause_resume_cancel(live_asgi):
    User.objects.create_superuser("cmp-admin", "cmp-admin@example.com", STAFF_PASSWORD)
    User.objects.bulk_create(
        User(username=f"fr-{i}", external_id=f"fr-{i}", locale="fr", email=f"fr-{i}@example.com")
        for i in range(3)
    )
    User.objects.create(username="en-0", external_id="en-0", locale="en")
    segment = Segment.objects.create(
        name="French speakers", rules={"field": "locale", "op": "eq", "value": "fr"}
    )
    _newsletter()

    with chromium() as browser:
        staff = StaffBrowser(browser, live_asgi.url, "cmp-admin")
        page = staff.page
        # The sidebar leads to the campaigns (Campaigns → Campaigns).
        staff.goto("/admin/")
        with page.expect_navigation():
            page.locator('a[href="/admin/campaigns/campaign/"]', has_text="Campaigns").first.click()
        staff.goto("/admin/campaigns/campaign/add/")
        page.fill("#id_name", "Spring news")
        page.select_option("#id_category", "marketing")
        page.check("input[name=channels][value=email]")
        page.select_option("#id_segment", str(segment.id))
        hint = page.locator("[data-segment-count]")
        hint.filter(has_text="3 users").wait_for()

        # Two steps: the first at once, the second a day later to those who did not open it.
        page.fill("#id_steps-0-position", "1")
        page.fill("#id_steps-0-template_key", "newsletter")
        page.locator(".add-row a, a.add-row, [data-add-inline]").first.click()
        page.fill("#id_steps-1-position", "2")
        page.fill("#id_steps-1-template_key", "newsletter")
        page.fill("#id_steps-1-delay", "1 00:00:00")
        page.fill("#id_steps-1-condition", '{"previous": "opened?"}')
        with page.expect_navigation():
            page.click("button[name=_continue]")
        refused = page.locator("#main").inner_text()
        assert "Step 2 condition.previous" in refused, refused

        page.fill("#id_steps-1-condition", '{"previous": "not_opened"}')
        with page.expect_navigation():
            page.click("button[name=_continue]")
        assert "/change/" in page.url, page.locator("#main").inner_text()
        count = page.locator(".field-line", has_text="Users in the audience now").locator(
            ".readonly"
        )
        audience_shown = count.inner_text().strip()
        assert staff.fits()

        # Preview the first step for one recipient.
        change_url = page.url
        with page.expect_navigation():
            page.locator("a", has_text="Preview").first.click()
        page.fill("#id_user_id", "fr-1")
        with page.expect_navigation():
            page.click(".cmp-preview-form button[type=submit]")
        subject = page.locator("[data-preview-subject]").inner_text()
        page.goto(change_url)

        # A test to oneself.
        with page.expect_navigation():
            page.click("[data-campaign-action=test-send]")
        test_message = page.locator(".messagelist, [role=alert], #main").first.inner_text()

        with page.expect_navigation():
            page.click("[data-campaign-action=schedule]")
        status = page.locator("[data-campaign-status]")
        assert status.get_attribute("data-campaign-status") == "scheduled"

        # Deliveries written while the page is open: the bar follows them, no reload.
        campaign_id = page.url.split("/campaign/")[1].split("/")[0]
        bar = page.locator("[data-progress-bar]")
        ids = _in_thread(_deliveries, campaign_id, ["delivered", "queued", "queued", "sent"])
        page.locator('[data-count="queued"]', has_text="2").wait_for()
        page.wait_for_function(
            "document.querySelector('[data-progress-bar]').value === 50", timeout=10_000
        )
        assert page.locator("[data-progress-percent]").inner_text() == "50.0 %"
        loaded_at = page.evaluate("performance.timeOrigin")
        _in_thread(_deliver, ids)
        page.locator('[data-count="delivered"]', has_text="4").wait_for()
        page.wait_for_function(
            "document.querySelector('[data-progress-bar]').value === 100", timeout=10_000
        )
        assert page.evaluate("performance.timeOrigin") == loaded_at  # never reloaded
        assert bar.get_attribute("max") == "100"

        with page.expect_navigation():
            page.click("[data-campaign-action=pause]")
        assert status.get_attribute("data-campaign-status") == "paused"
        assert "paused by staff:cmp-admin" in page.locator("[data-pause-reason]").inner_text()
        with page.expect_navigation():
            page.click("[data-campaign-action=resume]")
        assert status.get_attribute("data-campaign-status") == "scheduled"
        with page.expect_navigation():
            page.click("[data-campaign-action=cancel]")
        assert status.get_attribute("data-campaign-status") == "cancelled"
        assert page.locator("[data-campaign-action=cancel]").count() == 0
        results = page.locator("[data-results]").inner_text()
        assert not staff.errors, staff.errors

    campaign = Campaign.objects.get(id=campaign_id)
    assert campaign.status == "cancelled" and campaign.created_by == "staff:cmp-admin"
    assert campaign.segment == segment and campaign.channels == ["email"]
    steps = list(campaign.steps.order_by("position"))
    assert [(s.position, s.template_key, s.condition) for s in steps] == [
        (1, "newsletter", {}),
        (2, "newsletter", {"previous": "not_opened"}),
    ]
    assert steps[1].delay is not None and steps[1].delay.days == 1
    assert audience_shown == "3"  # the three French speakers, not the English one
    assert subject == "News for fr-1"
    assert "Test to cmp-admin@example.com" in test_message, test_message
    test_request = NotificationRequest.objects.get(caller="staff:cmp-admin")
    assert test_request.template_key == "newsletter" and test_request.campaign_id is None
    assert "4" in results


def test_the_author_cannot_approve(live_asgi):
    User.objects.create_superuser("cmp-author", "cmp-author@example.com", STAFF_PASSWORD)
    User.objects.create_superuser("cmp-reviewer", "cmp-reviewer@example.com", STAFF_PASSWORD)
    segment = Segment.objects.create(
        name="Everyone French", rules={"field": "locale", "op": "eq", "value": "fr"}
    )
    campaign = Campaign.objects.create(
        name="Big one",
        category_id="marketing",
        channels=["email"],
        segment=segment,
        status="pending_approval",
        audience_count=5000,
        created_by="staff:cmp-author",
    )
    campaign.steps.create(position=1, content={"subject": "Hi", "body": "Hello"})
    url = f"/admin/campaigns/campaign/{campaign.id}/change/"

    with chromium() as browser:
        author = StaffBrowser(browser, live_asgi.url, "cmp-author")
        author.goto(url)
        approve = author.page.locator("[data-campaign-action=approve]")
        assert approve.is_disabled()
        refusal = author.page.locator("[data-refusal]").inner_text()

        reviewer = StaffBrowser(browser, live_asgi.url, "cmp-reviewer")
        reviewer.goto(url)
        with reviewer.page.expect_navigation():
            reviewer.page.click("[data-campaign-action=approve]")
        shown = reviewer.page.locator("[data-campaign-status]").get_attribute(
            "data-campaign-status"
        )
        assert not author.errors and not reviewer.errors, (author.errors, reviewer.errors)

    assert "someone else approves it" in refusal
    assert shown == "scheduled"
    campaign.refresh_from_db()
    assert campaign.status == "scheduled" and campaign.approved_by == "staff:cmp-reviewer"
