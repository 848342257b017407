"""A conversation's transcript as staff read it on the conversation's page.

The newest ``TRANSCRIPT_LIMIT`` messages, oldest first, with a link to the ones before: each with
its sender (and their role, for an agent or a manager), the message it replies to, its
attachments (thumbnails for images, file chips for the rest), an "edited" mark and a "deleted by"
tombstone. System messages (members added, removed, leaving) are set apart.

What a message said before an edit or a deletion is shown only to staff who may read the edit
trail (``messaging.view_messageedit``, the permission of the "Edits and deletions" page, which
shows the same text): behind a disclosure, a deleted message's text struck through. Staff handling
a report need the words that were deleted, and the trail is kept for them; folded away, the
transcript still reads as the participants see it, and opening deleted content is a deliberate
act.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import escape, linebreaks
from django.utils.safestring import SafeString, mark_safe

from messaging import attachments, selectors
from messaging.admin.common import person
from messaging.models import Attachment, Conversation, Message, MessageEdit, MessageType, Role

TRANSCRIPT_LIMIT = 200
SEE_REMOVED = "messaging.view_messageedit"
# The box a thumbnail is drawn in, so that the page does not move as images arrive.
THUMB_BOX = (240, 180)
# Roles worth a badge beside the sender's name.
SHOWN_ROLES = {Role.AGENT, Role.OWNER, Role.ADMIN}


@dataclass
class Version:
    """What a message said until ``until``, when ``by`` edited it."""

    until: dt.datetime
    by: str
    content: str


@dataclass
class Attached:
    name: str
    size: int
    content_type: str
    file_url: str
    thumb_url: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class Line:
    id: int
    sent_at: dt.datetime
    sender: str
    system: bool = False
    encrypted: bool = False
    role: str = ""
    body: SafeString = field(default_factory=SafeString)
    edited_at: dt.datetime | None = None
    versions: list[Version] = field(default_factory=list)
    deleted_at: dt.datetime | None = None
    deleted_by: str = ""
    removed: str | None = None
    reply_id: int | None = None
    reply_to: str = ""
    reply_here: bool = False
    attachments: list[Attached] = field(default_factory=list)


def transcript_context(request: HttpRequest, conversation: Conversation) -> dict[str, object]:
    """The change page's context for ``admin/messaging/conversation/transcript.html``;
    ``?before=<message id>`` pages back."""
    before = _message_id(request.GET.get("before"))
    rows, earlier = selectors.message_transcript(
        conversation_id=conversation.pk, before=before, limit=TRANSCRIPT_LIMIT
    )
    roles = selectors.participant_roles(
        conversation_id=conversation.pk, user_ids={m.sender_id for m in rows if m.sender_id}
    )
    see_removed = request.user.has_perm(SEE_REMOVED)
    on_page = {m.id for m in rows}
    return {
        "transcript": [_line(m, roles, on_page, see_removed) for m in rows],
        "transcript_earlier": rows[0].id if earlier and rows else None,
        "transcript_before": before,
        "transcript_limit": TRANSCRIPT_LIMIT,
    }


def _message_id(raw: str | None) -> int | None:
    try:
        value = int(raw or "")
    except ValueError:
        return None
    return value if 0 < value < 2**63 else None


ENCRYPTED_TEXT = "(end-to-end encrypted)"


def _line(message: Message, roles: dict, on_page: set[int], see_removed: bool) -> Line:
    edits: list[MessageEdit] = list(message.edits.all())
    line = Line(
        id=message.id,
        sent_at=message.sent_at,
        sender=person(message.sender) if message.sender_id else "someone",
        system=message.type == MessageType.SYSTEM,
        encrypted=message.type == MessageType.ENCRYPTED,
        edited_at=message.edited_at,
    )
    role = roles.get(message.sender_id, "")
    line.role = role if role in SHOWN_ROLES else ""
    if line.system:
        line.body = escape(message.content)
    elif message.html:
        line.body = mark_safe(message.html)  # noqa: S308 - sanitised by rendering.render on write
    elif not line.encrypted:
        line.body = mark_safe(linebreaks(message.content, autoescape=True))  # noqa: S308 - escaped
    if message.parent_id is not None and message.parent is not None:
        line.reply_id = message.parent_id
        line.reply_to = str(message.parent)
        line.reply_here = message.parent_id in on_page
    deletion = next((e for e in edits if e.action == MessageEdit.Action.DELETE), None)
    if message.deleted_at is not None:
        line.deleted_at = message.deleted_at
        line.deleted_by = person(deletion.edited_by) if deletion else "someone"
        if see_removed and deletion is not None:
            line.removed = ENCRYPTED_TEXT if line.encrypted else deletion.previous_content
    if see_removed:
        line.versions = [
            Version(
                until=e.edited_at,
                by=person(e.edited_by),
                # An envelope: ciphertext, of no use to staff.
                content=ENCRYPTED_TEXT if line.encrypted else e.previous_content,
            )
            for e in edits
            if e.action == MessageEdit.Action.EDIT
        ]
    if message.deleted_at is None or see_removed:
        line.attachments = [attached(a) for a in message.attachments.all()]
    return line


def attached(attachment: Attachment) -> Attached:
    def url(variant: str) -> str:
        return reverse("admin:messaging_conversation_attachment", args=(attachment.id, variant))

    item = Attached(
        name=attachment.original_name or f"{attachment.content_type} file",
        size=attachment.size,
        content_type=attachment.content_type,
        file_url=url("file"),
    )
    if attachment.content_type in attachments.PILLOW_FORMATS:
        item.thumb_url = url("thumb") if attachment.thumbnail else item.file_url
        if attachment.width and attachment.height:
            scale = min(THUMB_BOX[0] / attachment.width, THUMB_BOX[1] / attachment.height, 1.0)
            item.width = max(1, round(attachment.width * scale))
            item.height = max(1, round(attachment.height * scale))
    return item
