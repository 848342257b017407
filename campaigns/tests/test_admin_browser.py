"""Segments in the staff console, clicked through in Chromium: a staff member writes rules as
JSON, sees a faulty rule refused with its path, saves, and reads how many users the segment
holds.

Skips, saying why, where Debian's chromium or Playwright is missing.
"""

from __future__ import annotations

import json

import pytest

from campaigns.models import Segment
from communication.models import User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_write_rules_see_errors_and_the_count(live_asgi):
    User.objects.create_superuser("seg-admin", "seg-admin@example.com", STAFF_PASSWORD)
    User.objects.bulk_create(
        User(username=f"fr-{i}", external_id=f"fr-{i}", locale="fr") for i in range(3)
    )
    User.objects.create(username="en-0", external_id="en-0", locale="en")
    bad = {"all": [{"field": "locale", "op": "like", "value": "fr"}]}
    good = {"all": [{"field": "locale", "op": "eq", "value": "fr"}]}

    with chromium() as browser:
        staff = StaffBrowser(browser, live_asgi.url, "seg-admin")
        page = staff.page
        # The sidebar leads to the segments (Campaigns → Segments).
        staff.goto("/admin/")
        with page.expect_navigation():
            page.locator('a[href="/admin/campaigns/segment/"]', has_text="Segments").first.click()
        assert page.url.endswith("/admin/campaigns/segment/"), page.url
        staff.goto("/admin/campaigns/segment/add/")
        page.fill("#id_name", "French speakers")
        page.fill("#id_rules", json.dumps(bad))
        with page.expect_navigation():
            page.click("button[name=_continue]")
        refused = page.locator("#main").inner_text()
        assert "rules.all[0].op" in refused and "Unknown operator" in refused

        page.fill("#id_rules", json.dumps(good))
        with page.expect_navigation():
            page.click("button[name=_continue]")
        assert "/change/" in page.url, page.url
        shown = page.locator("#main").inner_text()
        assert "users in the segment now" in shown.lower()
        assert staff.fits()
        count = page.locator(".field-line", has_text="Users in the segment now").locator(
            ".readonly"
        )
        count_text = count.inner_text()
        assert not staff.errors, staff.errors

    segment = Segment.objects.get()
    assert segment.rules == good and segment.created_by == "staff:seg-admin"
    assert count_text.strip() == "3"  # the three French speakers, not the English one
