"""Access logging clicked through in headless Chromium against a live server: staff open a
conversation from the list, read its transcript, and find their own access entry in the audit
console filtered by action; the database holds exactly one entry naming them and the
conversation. Skipped, saying why, without chromium."""

from __future__ import annotations

import pytest

from communication.models import AuditEntry, User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium
from messaging import services
from messaging.tests.conftest import make_user

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_staff_reading_a_transcript_find_their_access_in_the_audit_console(live_asgi):
    alice, _ = make_user("alice"), make_user("bob")
    conversation, _ = services.conversation_create(
        user=alice, type="group", participants=["bob"], title="Launch plans"
    )
    services.message_send(user=alice, conversation_id=conversation.pk, content="Launch on Tuesday")
    User.objects.create_superuser("auditor", "auditor@example.com", STAFF_PASSWORD, name="Ada")

    with chromium() as browser:
        console = StaffBrowser(browser, live_asgi.url, "auditor")
        page = console.page
        console.goto("/admin/messaging/conversation/")
        page.get_by_role("link", name="Launch plans").click()
        page.wait_for_url(f"**/admin/messaging/conversation/{conversation.pk}/change/")
        transcript = page.locator(".cs-lines").inner_text()

        console.goto("/admin/communication/auditentry/?action=conversation.viewed")
        rows = page.locator("#result_list tbody tr").all_inner_texts()
        errors = console.errors

    assert "Launch on Tuesday" in transcript
    [entry] = AuditEntry.objects.filter(action="conversation.viewed")
    assert (entry.actor, entry.object_type, entry.object_id) == (
        "staff:auditor",
        "messaging.conversation",
        str(conversation.pk),
    )
    assert len(rows) == 1 and "staff:auditor" in rows[0] and str(conversation.pk) in rows[0]
    assert errors == []
