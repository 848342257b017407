"""The audit trail in the staff console: a read-only list, newest first, filtered by actor, object,
action and time, with the chain's status above it; nobody adds, edits or deletes an entry."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from communication import audit
from communication.models import AuditEntry, User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium

LIST = "/admin/communication/auditentry/"


def sample() -> dict[str, AuditEntry]:
    with audit.audit_actor("staff:ann", ip="10.0.0.1"):
        approve = audit.audit_record(
            "template.approve", "templates_app.template", "welcome", changes={"state": [1, 2]}
        )
    with audit.audit_actor("service:billing"):
        webhook = audit.audit_record("webhook.update", "notifications.webhook", "w-17")
    old = AuditEntry.objects.create(
        at=timezone.now() - dt.timedelta(days=40),
        actor="system",
        action="audit.expire",
        object_type="communication.auditentry",
    )
    return {"approve": approve, "webhook": webhook, "old": old}


@pytest.fixture
def console(db) -> Client:
    client = Client()
    client.force_login(
        User.objects.create_superuser("root-console", "root@example.com", STAFF_PASSWORD)
    )
    return client


def shown(response) -> list[int]:
    """The ids of the listed entries, in order."""
    return [entry.pk for entry in response.context["cl"].result_list]


@pytest.mark.django_db
def test_the_list_is_newest_first_filtered_and_never_counts_the_table(console):
    rows = sample()
    with CaptureQueriesContext(connection) as queries:
        response = console.get(LIST)
    assert response.status_code == 200
    assert shown(response) == [rows["old"].pk, rows["webhook"].pk, rows["approve"].pk]
    # The one count is the header's, of the entries awaiting a link, capped (audit_status).
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert len(counts) == 1 and "LIMIT" in counts[0], counts

    assert shown(console.get(LIST, {"action": "template.approve"})) == [rows["approve"].pk]
    assert shown(console.get(LIST, {"actor": "service:billing"})) == [rows["webhook"].pk]
    by_object = {"object_type": "notifications.webhook", "object_id": "w-17"}
    assert shown(console.get(LIST, by_object)) == [rows["webhook"].pk]
    assert shown(console.get(LIST, {"object_id": "welcome"})) == [rows["approve"].pk]
    since = (timezone.now() - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    recent = shown(console.get(LIST, {"at_from_0": since, "at_from_1": "00:00"}))
    assert recent == [rows["webhook"].pk, rows["approve"].pk]
    older = shown(console.get(LIST, {"at_to_0": since, "at_to_1": "00:00"}))
    assert older == [rows["old"].pk]
    refused = console.get(LIST, {"at_from_0": "not a day", "at_from_1": "00:00"})
    assert refused.status_code == 302 and refused["Location"].endswith("?e=1")


@pytest.mark.django_db
def test_nobody_adds_edits_or_deletes_an_entry(console):
    entry = sample()["approve"]
    assert console.get(f"{LIST}add/").status_code == 403
    page = console.get(f"{LIST}{entry.pk}/change/")
    assert page.status_code == 200
    assert b"template.approve" in page.content and b'name="_save"' not in page.content
    assert console.post(f"{LIST}{entry.pk}/change/", {"action": "x"}).status_code == 403
    assert console.get(f"{LIST}{entry.pk}/delete/").status_code == 403
    assert console.post(f"{LIST}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    entry.refresh_from_db()
    assert entry.action == "template.approve"


@pytest.mark.django_db
def test_the_header_shows_the_chain_status(console):
    sample()
    page = console.get(LIST).content.decode()
    assert "not verified yet" in page and "3 entries waiting" in page

    audit.audit_chain()
    audit.audit_verify()
    page = console.get(LIST).content.decode()
    assert "chain verified" in page and "Sealed through link #3" in page
    assert "0 entries waiting" in page


@needs_chromium
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_staff_filter_the_audit_list_by_action_in_chromium(live_asgi):
    rows = sample()
    User.objects.create_superuser("audit-console", "audit@example.com", STAFF_PASSWORD)
    with chromium() as browser:
        staff = StaffBrowser(browser, live_asgi.url, "audit-console")
        page = staff.page
        staff.goto(LIST)
        before = page.locator("#result_list tbody tr").count()
        page.locator("a", has_text="Filters").first.click()
        page.locator("#changelist-filter input[name=action]").fill("webhook.update")
        page.locator("#changelist-filter").get_by_role("button", name="Apply Filters").click()
        page.wait_for_url("**action=webhook.update**")
        after = page.locator("#result_list tbody tr").all_inner_texts()
        fits = staff.fits()
        staff.screenshot("audit-trail")
        errors = staff.errors
    assert before == 3
    assert len(after) == 1 and "w-17" in after[0] and str(rows["webhook"].pk) in after[0]
    assert fits and not errors
