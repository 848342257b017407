"""Frequency caps in the console, in Chromium: staff set a category's caps (nonsense refused with
what is wrong), the change is audited with the caps before and after, the categories list shows
them, and the delivery log says why a delivery was skipped. Skipped, saying why, where Debian's
``chromium`` or Playwright is missing."""

from __future__ import annotations

import pytest

from communication.models import AuditEntry, Category, User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium
from notifications import services
from notifications.models import Delivery

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def staff(db):
    return User.objects.create_superuser("support", "support@example.com", STAFF_PASSWORD)


def skipped_delivery(settings) -> Delivery:
    """A delivery the worker skipped for its cap (delivered in-process to the outbox)."""
    settings.CELERY_QUEUE_PREFIX = "void-"
    ids = []
    for _ in range(2):
        outcome = services.notification_send(
            caller="shop",
            payload={
                "recipients": [{"email": "capped@example.com"}],
                "category": "reminders",
                "channels": ["email"],
                "content": {"subject": "Sale", "body": "Half price."},
            },
        )
        ids.append(outcome.body["notifications"][0]["deliveries"][0]["id"])
    assert list(services.deliveries_attempt(ids).values()) == ["sent", "skipped"]
    return Delivery.objects.get(id=ids[1])


def test_staff_set_a_categorys_caps_and_see_what_they_skip(live_asgi, staff, settings):
    reminders = Category.objects.get(key="reminders")
    security = Category.objects.get(key="security")
    assert reminders.frequency_caps == {}
    with chromium() as browser:
        console = StaffBrowser(browser, live_asgi.url, "support")
        page = console.page
        console.goto(f"/admin/communication/category/{reminders.pk}/change/")
        field = page.locator("#id_frequency_caps")
        field.fill('{"email": {"limit": 0, "period": "7 days"}}')
        page.locator("[name=_save]").click()
        errors = page.locator(".errorlist").inner_text()
        assert "limit must be a whole number from 1 to 1000" in errors
        assert "'7 days' is not a period" in errors

        # A mandatory category must always arrive.
        console.goto(f"/admin/communication/category/{security.pk}/change/")
        page.locator("#id_frequency_caps").fill('{"sms": {"limit": 3, "period": "1h"}}')
        page.locator("[name=_save]").click()
        assert "must always arrive" in page.locator(".errorlist").inner_text()

        console.goto(f"/admin/communication/category/{reminders.pk}/change/")
        page.locator("#id_frequency_caps").fill('{"email": {"limit": 1, "period": "7d"}}')
        page.locator("[name=_save]").click()
        page.wait_for_url("**/admin/communication/category/")
        row = page.locator("tr", has_text="reminders").first
        assert "email: 1 per 7d" in row.inner_text()
        assert not console.errors, console.errors

    security.refresh_from_db()
    assert security.frequency_caps == {}
    reminders.refresh_from_db()
    assert reminders.frequency_caps == {"email": {"limit": 1, "period": "7d"}}
    entry = AuditEntry.objects.get(action="category.frequency_caps")
    assert (entry.actor, entry.object_id) == ("staff:support", str(reminders.pk))
    assert entry.changes["frequency_caps"] == [{}, {"email": {"limit": 1, "period": "7d"}}]

    # Another process (the page server) changed the category: this one's cache forgets it.
    from notifications import categories  # noqa: PLC0415

    categories.forget()
    skipped = skipped_delivery(settings)
    with chromium() as browser:
        console = StaffBrowser(browser, live_asgi.url, "support")
        console.goto("/admin/notifications/delivery/?q=capped@example.com")
        rows = console.page.locator("#result_list tbody tr")
        assert rows.count() == 2
        assert "frequency_cap" in rows.filter(has_text="skipped").inner_text()
        console.goto(f"/admin/notifications/delivery/{skipped.id}/change/")
        assert "frequency_cap" in console.page.locator("#content").inner_text()
