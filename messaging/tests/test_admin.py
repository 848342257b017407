"""The Conversations section of the staff console, server side: a conversation's transcript (order,
edits, deletions, replies, system messages, attachments, paging, query count), the staff-only
attachment view, the agent changed from the list and by the bulk action (through
``services.support_assign``), read-only pages, exact indexed search and meaningful titles.

The same pages clicked through in Chromium: ``test_admin_browser.py``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from PIL import Image

from communication.models import User
from messaging import selectors, services
from messaging.admin import transcript
from messaging.models import Attachment, Conversation, Message, MessageType, Participant, Role
from messaging.tests.conftest import make_user

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/messaging/conversation/"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def png_bytes(size: tuple[int, int] = (640, 400)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (40, 110, 200)).save(out, format="PNG")
    return out.getvalue()


def change_url(conversation: Conversation) -> str:
    return f"{CHANGELIST}{conversation.pk}/change/"


@dataclass
class Sample:
    conversation: Conversation
    edited: Message
    reply: Message
    deleted: Message
    system: Message
    with_image: Message
    with_file: Message
    image: Attachment
    pdf: Attachment

    @property
    def in_order(self) -> list[Message]:
        return [
            self.edited,
            self.reply,
            self.deleted,
            self.system,
            self.with_image,
            self.with_file,
        ]


def sample_conversation() -> Sample:
    """A group conversation written through the services: an edited message, a reply to it, a
    deleted message, a member added (a system message), an image and a PDF."""
    alice, bob, _ = make_user("alice"), make_user("bob"), make_user("carol")
    group, _ = services.conversation_create(user=alice, type="group", participants=["bob"])
    edited, _ = services.message_send(
        user=alice, conversation_id=group.pk, content="Hello **team**, the launch is on Monday"
    )
    services.message_edit(
        user=alice, message_id=edited.id, content="Hello **team**, the launch is on Tuesday"
    )
    reply, _ = services.message_send(
        user=bob, conversation_id=group.pk, content="Tuesday works for me", parent_id=edited.id
    )
    deleted, _ = services.message_send(
        user=bob, conversation_id=group.pk, content="my password is hunter2"
    )
    services.message_delete(user=bob, message_id=deleted.id)
    services.participant_add(user=alice, conversation_id=group.pk, user_id="carol")
    system = Message.objects.filter(conversation=group, type=MessageType.SYSTEM).get()
    image = services.attachment_upload(user=alice, data=png_bytes(), name="mockup.png")
    with_image, _ = services.message_send(
        user=alice, conversation_id=group.pk, content="The mockup", attachment_ids=[image.id]
    )
    pdf = services.attachment_upload(user=bob, data=PDF, name="budget.pdf")
    with_file, _ = services.message_send(
        user=bob, conversation_id=group.pk, attachment_ids=[pdf.id]
    )
    return Sample(group, edited, reply, deleted, system, with_image, with_file, image, pdf)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }


@pytest.fixture
def staff(client) -> Client:
    admin = User.objects.create_superuser("ops", "ops@example.com", "pw", name="Olga Ops")
    client.force_login(admin)
    return client


def staff_with(*codenames: str) -> Client:
    """A client logged in as a staff member holding only the given messaging permissions."""
    user = User.objects.create_user(f"staff-{'-'.join(codenames)}", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="messaging", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def title(page) -> str:
    return re.search(r"<title>\s*(.*?) \| [^|]*</title>", page.content.decode()).group(1)


def message_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-message="(\d+)"', html)]


def block(html: str, message: Message) -> str:
    """The transcript entry of ``message``."""
    start = html.index(f'id="message-{message.id}"')
    end = html.find('<li class="cs-', start + 1)
    return html[start : end if end != -1 else None]


# ------------------------------------------------------------------------------------ transcript


def test_transcript_shows_the_messages_in_order_with_their_marks(staff):
    sample = sample_conversation()
    page = staff.get(change_url(sample.conversation))
    assert page.status_code == 200
    html = page.content.decode()

    assert message_ids(html) == [m.id for m in sample.in_order]
    edited = block(html, sample.edited)
    assert "<strong>team</strong>, the launch is on Tuesday" in edited
    assert ">edited<" in edited
    assert "1 earlier version" in edited and "the launch is on Monday" in edited
    assert "Reply to Alice: Hello **team**, the launch is on Tuesday" in block(html, sample.reply)
    assert f'href="#message-{sample.edited.id}"' in block(html, sample.reply)
    deleted = block(html, sample.deleted)
    assert "Deleted by Bob (bob)" in deleted
    # Staff who may read the edit trail find the deleted words folded away and struck through.
    assert re.search(r"<details[^>]*>\s*<summary>Show what it said</summary>", deleted)
    assert '<del class="cs-removed-text">my password is hunter2</del>' in deleted
    system = block(html, sample.system)
    assert "cs-system" in system and "Alice added Carol" in system and "cs-sender" not in system
    thumb = f"/admin/messaging/conversation/attachments/{sample.image.id}/thumb/"
    assert f'src="{thumb}"' in block(html, sample.with_image)
    # 640x400 drawn in the 240x180 box, so that the page does not move as it loads.
    assert 'width="240" height="150"' in block(html, sample.with_image)
    chip = block(html, sample.with_file)
    assert f'href="/admin/messaging/conversation/attachments/{sample.pdf.id}/file/"' in chip
    assert "budget.pdf" in chip and "cs-file" in chip


def test_staff_without_the_edit_trail_see_tombstones_only(staff):
    sample = sample_conversation()
    attachment = services.attachment_upload(
        user=sample.deleted.sender, data=png_bytes(), name="x.png"
    )
    gone, _ = services.message_send(
        user=sample.deleted.sender,
        conversation_id=sample.conversation.pk,
        attachment_ids=[attachment.id],
    )
    services.message_delete(user=gone.sender, message_id=gone.id)
    reader = staff_with("view_conversation")
    html = reader.get(change_url(sample.conversation)).content.decode()
    assert "Deleted by Bob (bob)" in block(html, sample.deleted)
    assert "hunter2" not in html and "Show what it said" not in html
    assert ">edited<" in block(html, sample.edited)
    assert "earlier version" not in html and "on Monday" not in html
    assert str(attachment.id) not in html
    thumb = f"/admin/messaging/conversation/attachments/{attachment.id}/thumb/"
    assert reader.get(thumb).status_code == 403
    assert staff.get(thumb).status_code == 200


def test_transcript_query_count_does_not_grow_with_the_messages(staff):
    small = sample_conversation()
    big = sample_conversation_of(60)

    def queries(conversation: Conversation) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert staff.get(change_url(conversation)).status_code == 200
        return [q["sql"] for q in captured]

    few = queries(small.conversation)
    many = queries(big)
    assert len(few) == len(many), "\n".join(many)
    assert len(many) <= 12, "\n".join(many)


def sample_conversation_of(count: int) -> Conversation:
    dan, eve = make_user("dan"), make_user("eve")
    group, _ = services.conversation_create(user=dan, type="group", participants=["eve"])
    parent = None
    for i in range(count):
        author = dan if i % 2 else eve
        message, _ = services.message_send(
            user=author,
            conversation_id=group.pk,
            content=f"message {i}",
            parent_id=parent.id if parent and i % 5 == 0 else None,
        )
        parent = parent or message
        if i % 7 == 0:
            services.message_edit(user=author, message_id=message.id, content=f"message {i}!")
        if i % 11 == 0:
            services.message_delete(user=author, message_id=message.id)
    return group


def test_long_transcripts_show_the_latest_with_a_link_to_earlier_ones(staff, monkeypatch):
    monkeypatch.setattr(transcript, "TRANSCRIPT_LIMIT", 4)
    sample = sample_conversation()
    everything = [m.id for m in sample.in_order]
    html = staff.get(change_url(sample.conversation)).content.decode()
    assert message_ids(html) == everything[-4:]
    link = re.search(r'id="transcript-earlier" href="\?before=(\d+)#transcript"', html)
    assert link and int(link.group(1)) == everything[-4]
    earlier = staff.get(f"{change_url(sample.conversation)}?before={link.group(1)}")
    html = earlier.content.decode()
    assert message_ids(html) == everything[:2]
    assert "transcript-earlier" not in html and "Back to the newest messages" in html
    # A reply whose parent is on an earlier page links to that page.
    monkeypatch.setattr(transcript, "TRANSCRIPT_LIMIT", 1)
    reply_page = staff.get(f"{change_url(sample.conversation)}?before={sample.reply.id + 1}")
    expected = f'href="?before={sample.edited.id + 1}#message-{sample.edited.id}"'
    assert expected in reply_page.content.decode()


# ----------------------------------------------------------------------------- attachment view


def test_attachment_view_serves_files_to_staff_only_with_safe_headers(staff):
    sample = sample_conversation()
    base = "/admin/messaging/conversation/attachments"
    thumb = staff.get(f"{base}/{sample.image.id}/thumb/")
    assert thumb.status_code == 200
    assert thumb["Content-Type"] == "image/webp"
    assert thumb["X-Content-Type-Options"] == "nosniff"
    assert thumb["Content-Disposition"].startswith("inline")
    body = b"".join(thumb.streaming_content)
    assert max(Image.open(io.BytesIO(body)).size) <= 320
    image = staff.get(f"{base}/{sample.image.id}/file/")
    assert image["Content-Type"] == "image/png"
    assert image["Content-Disposition"] == 'inline; filename="mockup.png"'
    pdf = staff.get(f"{base}/{sample.pdf.id}/file/")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf["Content-Disposition"] == 'attachment; filename="budget.pdf"'
    assert pdf["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in pdf["Content-Security-Policy"]
    assert b"".join(pdf.streaming_content) == PDF
    assert staff.get(f"{base}/{sample.pdf.id}/thumb/").status_code == 404
    assert staff.get(f"{base}/{sample.pdf.id}/other/").status_code == 404
    # An upload not sent yet is its uploader's alone.
    unsent = services.attachment_upload(user=sample.reply.sender, data=PDF, name="draft.pdf")
    assert staff.get(f"{base}/{unsent.id}/file/").status_code == 404
    # Not for anonymous visitors (sent to log in) nor staff who may not see conversations.
    assert Client().get(f"{base}/{sample.pdf.id}/file/").status_code == 302
    assert staff_with("view_message").get(f"{base}/{sample.pdf.id}/file/").status_code == 403


# ------------------------------------------------------------------------------ agents, list


@dataclass
class Support:
    conversation: Conversation
    group: Conversation
    ann: User
    ben: User


def support_setup() -> Support:
    dave, frank = make_user("dave"), make_user("frank")
    ann = make_user("ann", roles=["support_agent"])
    ben = make_user("ben", roles=["support_agent"])
    conversation, _ = services.conversation_create(user=dave, type="support", participants=[])
    group, _ = services.conversation_create(user=frank, type="group", participants=["dave"])
    return Support(conversation, group, ann, ben)


def list_form(client: Client, **filters: str) -> tuple[str, dict[str, str]]:
    """The conversations list and the data its form posts back as it stands."""
    html = client.get(CHANGELIST, filters).content.decode()
    data = {"_save": "Save", "action": ""}
    for name, value in re.findall(
        r'<input type="hidden" name="(form-[^"]+)" value="([^"]*)"', html
    ):
        data[name] = value
    for select in re.findall(
        r'<select name="(form-\d+-assigned_agent)"[^>]*>(.*?)</select>', html, re.S
    ):
        name, options = select
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', options)
        data[name] = chosen.group(1) if chosen else ""
    return html, data


def row_prefix(html: str, conversation: Conversation) -> str:
    return re.search(rf'name="(form-\d+)-id" value="{conversation.pk}"', html).group(1)


def test_the_agent_is_changed_from_the_list_through_the_service(staff):
    setup = support_setup()
    html, data = list_form(staff)
    support_row = row_prefix(html, setup.conversation)
    group_row = row_prefix(html, setup.group)
    # Agents only, by name and user id; a conversation that is not support has no choice at all.
    assert f'name="{support_row}-assigned_agent"' in html
    assert f'<option value="{setup.ann.pk}">Ann (ann)</option>' in html
    assert f'name="{group_row}-assigned_agent"' not in html
    assert "not a support conversation" in html
    assert ">Dave (dave)<" not in html

    data[f"{support_row}-assigned_agent"] = str(setup.ann.pk)
    data[f"{group_row}-assigned_agent"] = str(setup.ann.pk)  # ignored: not a support one
    response = staff.post(CHANGELIST, data, follow=True)
    assert response.status_code == 200
    setup.conversation.refresh_from_db()
    setup.group.refresh_from_db()
    assert setup.conversation.assigned_agent == setup.ann
    assert setup.group.assigned_agent is None
    # support_assign's work, not a raw save: the agent joined, a system message says who did it.
    member = Participant.objects.get(conversation=setup.conversation, user=setup.ann)
    assert member.role == Role.AGENT and member.left_at is None
    note = Message.objects.filter(conversation=setup.conversation, type=MessageType.SYSTEM)
    assert list(note.values_list("content", flat=True)) == ["Olga Ops added Ann"]

    # Reassigned: the first agent leaves; an agent cannot be unassigned from here.
    html, data = list_form(staff)
    support_row = row_prefix(html, setup.conversation)
    assert f'<select name="{support_row}-assigned_agent"' in html
    assert ">Unassigned<" not in html.split(f'name="{support_row}-assigned_agent"')[1][:400]
    data[f"{support_row}-assigned_agent"] = str(setup.ben.pk)
    staff.post(CHANGELIST, data)
    setup.conversation.refresh_from_db()
    assert setup.conversation.assigned_agent == setup.ben
    assert Participant.objects.get(conversation=setup.conversation, user=setup.ann).left_at
    data[f"{support_row}-assigned_agent"] = ""
    page = staff.post(CHANGELIST, data).content.decode()
    assert "support conversations are reassigned, not unassigned" in page
    setup.conversation.refresh_from_db()
    assert setup.conversation.assigned_agent == setup.ben


def test_only_support_agents_can_be_chosen(staff):
    setup = support_setup()
    html, data = list_form(staff)
    row = row_prefix(html, setup.conversation)
    data[f"{row}-assigned_agent"] = str(User.objects.get(username="dave").pk)
    page = staff.post(CHANGELIST, data).content.decode()
    assert "Select a valid choice" in page
    setup.conversation.refresh_from_db()
    assert setup.conversation.assigned_agent is None


def test_staff_who_may_only_view_see_the_agent_but_cannot_change_it():
    setup = support_setup()
    services.support_assign(conversation=setup.conversation, agent=setup.ann)
    reader = staff_with("view_conversation")
    html = reader.get(CHANGELIST).content.decode()
    assert ">ann<" in html
    assert '<select name="form-' not in html and 'value="assign_agent"' not in html
    data = {
        "_save": "Save",
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-0-id": str(setup.conversation.pk),
        "form-0-assigned_agent": str(setup.ben.pk),
    }
    assert reader.post(CHANGELIST, data).status_code == 403
    setup.conversation.refresh_from_db()
    assert setup.conversation.assigned_agent == setup.ann


def test_list_query_count_does_not_grow_with_the_rows(staff):
    setup = support_setup()

    def queries() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert staff.get(CHANGELIST).status_code == 200
        return [q["sql"] for q in captured]

    few = queries()
    requester = User.objects.get(username="dave")
    for i in range(20):
        conversation, _ = services.conversation_create(
            user=requester, type="support", participants=[], title=f"ticket {i}"
        )
        services.message_send(user=requester, conversation_id=conversation.pk, content="help")
        if i % 2:
            services.support_assign(conversation=conversation, agent=setup.ann)
    many = queries()
    assert len(few) == len(many), "\n".join(many)


def test_the_bulk_action_assigns_support_conversations_and_names_the_others(staff):
    setup = support_setup()
    chosen = {"action": "assign_agent", "_selected_action": [setup.conversation.pk, setup.group.pk]}
    form = staff.post(CHANGELIST, chosen)
    assert form.status_code == 200 and b"Assign to an agent" in form.content
    done = staff.post(CHANGELIST, {**chosen, "apply": "1", "agent": setup.ben.pk}, follow=True)
    page = done.content.decode()
    assert "Group: Frank, Dave: Only support conversations are assigned to agents." in page
    assert "Assigned 1 conversation(s)." in page
    setup.conversation.refresh_from_db()
    assert setup.conversation.assigned_agent == setup.ben


# -------------------------------------------------------------------------- read-only, search


def test_conversation_message_and_edit_pages_are_read_only(staff):
    sample = sample_conversation()
    edit = sample.edited.edits.get()
    pages = [
        change_url(sample.conversation),
        f"/admin/messaging/message/{sample.with_file.id}/change/",
        f"/admin/messaging/messageedit/{edit.id}/change/",
    ]
    for url in pages:
        page = staff.get(url)
        assert page.status_code == 200, url
        assert b'name="_save"' not in page.content and b'name="_continue"' not in page.content
        assert staff.post(url, {}).status_code == 403, url
    for model in ("conversation", "message", "messageedit"):
        assert staff.get(f"/admin/messaging/{model}/add/").status_code == 403
    assert staff.get(f"{CHANGELIST}{sample.conversation.pk}/delete/").status_code == 403
    # Each page is titled by what it shows.
    assert title(staff.get(pages[0])) == "Group: Alice, Bob, Carol | View conversation"
    assert title(staff.get(pages[1])) == "Bob: (attachment) | View message"
    message_page = staff.get(f"/admin/messaging/message/{sample.with_image.id}/change/")
    assert b"Group: Alice, Bob, Carol \xe2\x80\x94 see it in the transcript" in message_page.content
    assert f"attachments/{sample.image.id}/thumb/".encode() in message_page.content


def test_lists_render_with_meaningful_names(staff):
    sample = sample_conversation()
    conversations = staff.get(CHANGELIST).content.decode()
    assert "Group: Alice, Bob, Carol" in conversations
    messages = staff.get("/admin/messaging/message/").content.decode()
    assert "Alice: Hello **team**, the launch is on Tuesday" in messages
    assert "Bob: (deleted)" in messages and "System: Alice added Carol" in messages
    edits = staff.get("/admin/messaging/messageedit/").content.decode()
    assert "Bob: (deleted)" in edits and "Bob (bob)" in edits
    assert sample.conversation.pk


@pytest.mark.parametrize(
    ("url", "term", "found"),
    [
        (CHANGELIST, "{conversation}", "Group: Alice, Bob, Carol"),
        (CHANGELIST, "carol", "Group: Alice, Bob, Carol"),
        ("/admin/messaging/message/", "{reply}", "Bob: Tuesday works for me"),
        ("/admin/messaging/message/", "bob", "Bob: Tuesday works for me"),
        ("/admin/messaging/messageedit/", "{edited}", "Alice: Hello"),
    ],
)
def test_search_is_exact_and_uses_indexed_lookups(staff, url, term, found):
    sample = sample_conversation()
    term = term.format(
        conversation=sample.conversation.pk, reply=sample.reply.id, edited=sample.edited.id
    )
    with CaptureQueriesContext(connection) as captured:
        page = staff.get(url, {"q": term})
    assert page.status_code == 200 and found in page.content.decode()
    searched = [q["sql"] for q in captured if term in q["sql"] or "UPPER(" in q["sql"]]
    assert searched and not [sql for sql in searched if "UPPER(" in sql or "LIKE" in sql]
    # Only whole values match: a part of a name or of the content finds nothing.
    for partial in ("Caro", "launch", "99999999999999999999", "not-a-uuid"):
        assert found not in staff.get(url, {"q": partial}).content.decode()


def test_names():
    alice, bob = make_user("alice"), make_user("bob")
    titled, _ = services.conversation_create(
        user=alice, type="group", participants=["bob"], title="Launch"
    )
    untitled, _ = services.conversation_create(user=alice, type="direct", participants=["bob"])
    assert str(titled) == "Launch"
    assert str(untitled) == f"Direct conversation {untitled.pk.hex[:8]}"
    named = selectors.conversation_staff_list().get(pk=untitled.pk)
    assert str(named) == "Direct: Alice, Bob"
    crowd = [make_user(f"user{i}") for i in range(5)]
    big, _ = services.conversation_create(
        user=alice, type="group", participants=[u.external_id for u in crowd]
    )
    assert str(selectors.conversation_staff_list().get(pk=big.pk)) == (
        "Group: Alice, User0, User1, User2 and others"
    )
    long, _ = services.message_send(
        user=bob, conversation_id=titled.pk, content="one two three four five six seven eight nine"
    )
    assert str(long) == "Bob: one two three four five six seven eight …"
