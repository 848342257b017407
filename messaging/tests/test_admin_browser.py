"""The Conversations section clicked through in headless Chromium against a live server: a
conversation's transcript (order, edit and deletion marks, the reply, the system message, a
thumbnail that loads, a file chip that downloads) and an agent assigned from the list and by the
bulk action, checked in the database afterwards.

The rows are written through the messaging services; the attachments go to the storage the live
server reads (``MEDIA_ROOT``) and are removed afterwards. Skipped, saying why, without chromium.
"""

from __future__ import annotations

import pytest

from communication.models import User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium
from messaging import attachments
from messaging.models import Message, MessageType, Participant, Role
from messaging.tests.test_admin import PDF, sample_conversation, support_setup

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def staff_member(username: str = "console") -> User:
    return User.objects.create_superuser(
        username, f"{username}@example.com", STAFF_PASSWORD, name="Connie Console"
    )


def test_a_conversation_transcript_in_chromium(live_asgi):
    sample = sample_conversation()
    staff_member()
    stored = [name for a in (sample.image, sample.pdf) for name in (a.file, a.thumbnail) if name]
    url = f"/admin/messaging/conversation/{sample.conversation.pk}/change/"
    try:
        with chromium() as browser:
            console = StaffBrowser(browser, live_asgi.url, "console")
            page = console.page
            console.goto(url)
            shown = page.locator(".cs-lines > li[data-message]").evaluate_all(
                "items => items.map(item => Number(item.dataset.message))"
            )

            edited = page.locator(f"#message-{sample.edited.id}")
            edited_mark = edited.locator(".cs-edited").inner_text()
            edited.get_by_text("1 earlier version").click()
            earlier = edited.locator(".cs-version-text").inner_text()

            deleted = page.locator(f"#message-{sample.deleted.id}")
            tombstone = deleted.locator(".cs-tombstone").inner_text()
            hidden_before = deleted.locator(".cs-removed-text").is_visible()
            deleted.get_by_text("Show what it said").click()
            removed = deleted.locator("del.cs-removed-text").inner_text()

            system_classes = page.locator(f"#message-{sample.system.id}").get_attribute("class")
            system_text = page.locator(f"#message-{sample.system.id}").inner_text()

            reply = page.locator(f"#message-{sample.reply.id} .cs-reply")
            reply_text = reply.inner_text()
            reply.click()
            page.wait_for_url(f"**#message-{sample.edited.id}")

            thumbnail = page.locator(f"#message-{sample.with_image.id} .cs-thumb img")
            thumbnail.scroll_into_view_if_needed()
            width = thumbnail.evaluate("img => img.decode().then(() => img.naturalWidth)")

            chip = page.locator(f"#message-{sample.with_file.id} a.cs-file")
            chip_text = chip.inner_text()
            download = page.request.get(chip.get_attribute("href"))
            disposition = download.headers["content-disposition"]
            body = download.body()

            fits = console.fits()
            page.evaluate("window.scrollTo(0, 0)")
            console.screenshot("conversation-transcript")
            errors = console.errors
    finally:
        for name in stored:
            attachments.storage().delete(name)

    assert shown == [m.id for m in sample.in_order]
    assert edited_mark.lower() == "edited"
    assert "Hello **team**, the launch is on Monday" in earlier
    assert "Deleted by Bob (bob)" in tombstone
    assert not hidden_before and removed == "my password is hunter2"
    assert "cs-system" in system_classes and "Alice added Carol" in system_text
    assert "Reply to Alice: Hello **team**" in reply_text
    assert width > 0
    assert "budget.pdf" in chip_text
    assert disposition == 'attachment; filename="budget.pdf"' and body == PDF
    assert fits
    assert errors == []


def test_the_agent_is_assigned_from_the_list_in_chromium(live_asgi):
    setup = support_setup()
    staff_member()
    with chromium() as browser:
        console = StaffBrowser(browser, live_asgi.url, "console")
        page = console.page
        console.goto("/admin/messaging/conversation/?type__exact=support")
        row = page.locator("#result_list tbody tr", has_text="Support: Dave")
        row.locator("select").select_option(label="Ann (ann)")
        page.locator("button[name=_save]").click()
        page.get_by_text("1 conversation was changed successfully.").wait_for()
        chosen = (
            page.locator("#result_list tbody tr", has_text="Support: Dave")
            .locator("select option:checked")
            .inner_text()
        )
        fits = console.fits()
        errors = console.errors
    setup.conversation.refresh_from_db()
    assert setup.conversation.assigned_agent == setup.ann
    assert chosen.strip() == "Ann (ann)"
    assert Participant.objects.get(conversation=setup.conversation, user=setup.ann).role == (
        Role.AGENT
    )
    assert fits and errors == []

    # The bulk action: the support conversation goes to Ben, the group one is named as refused.
    with chromium() as browser:
        console = StaffBrowser(browser, live_asgi.url, "console")
        page = console.page
        console.goto("/admin/messaging/conversation/")
        for name in ("Support: Dave", "Group: Frank, Dave"):
            page.locator("#result_list tbody tr", has_text=name).locator(
                "input.action-select"
            ).check()
        page.select_option("select[name=action]", "assign_agent")
        page.locator("button[name=index]").click()
        page.locator("#assign-agent-form").wait_for()
        page.select_option("#id_agent", label="Ben (ben)")
        page.locator("button[name=apply]").click()
        page.get_by_text("Assigned 1 conversation(s).").wait_for()
        refused = page.get_by_text("Only support conversations are assigned to agents.")
        refusal = refused.inner_text()
        errors = console.errors
    assert refusal == "Group: Frank, Dave: Only support conversations are assigned to agents."
    setup.conversation.refresh_from_db()
    setup.group.refresh_from_db()
    assert setup.conversation.assigned_agent == setup.ben
    assert setup.group.assigned_agent is None
    notes = Message.objects.filter(conversation=setup.conversation, type=MessageType.SYSTEM)
    assert list(notes.order_by("id").values_list("content", flat=True)) == [
        "Connie Console added Ann",
        "Connie Console removed Ann",
        "Connie Console added Ben",
    ]
    assert errors == []
