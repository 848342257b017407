"""Changing a message after it was sent: edits and deletions, both kept in ``MessageEdit``."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from communication import realtime
from communication.audit import actor_of, audit_record
from communication.exceptions import APIError, ConflictError
from communication.models import User
from messaging import conf, rendering
from messaging.models import ACTIVE_MEMBER, Message, MessageEdit, MessageType, Participant
from messaging.services import e2e
from messaging.services.access import MANAGER_ROLES, PermissionDeniedError, message_locked
from messaging.services.payloads import message_payload


def message_edit(
    *, user: User, message_id: int, content: str = "", encrypted: object = None
) -> Message:
    """Replaces the content of the caller's own message within the edit window; the previous
    content is kept in ``MessageEdit``. A message of an end-to-end encrypted conversation is
    edited with a new envelope (``encrypted``), never with text."""
    if encrypted is not None:
        if content:
            raise e2e.plaintext_refused()
        content = e2e.envelope_text(e2e.envelope_validated(encrypted))
    elif not content or not content.strip():
        raise APIError("Content cannot be empty.", fields={"content": ["Empty."]})
    elif len(content) > conf.get("MESSAGING_MAX_CONTENT_LENGTH"):
        raise APIError("The message is too long.", fields={"content": ["Too long."]})
    with transaction.atomic():
        message = message_locked(user, message_id)
        if message.sender_id != user.pk or message.type == MessageType.SYSTEM:
            raise PermissionDeniedError("Only the author may edit a message.")
        if (message.type == MessageType.ENCRYPTED) != (encrypted is not None):
            raise (
                e2e.plaintext_refused()
                if message.type == MessageType.ENCRYPTED
                else e2e.envelope_refused()
            )
        if message.deleted_at is not None:
            raise ConflictError("The message was deleted.")
        window = conf.get("MESSAGING_EDIT_WINDOW_SECONDS")
        if timezone.now() - message.sent_at > dt.timedelta(seconds=window):
            raise PermissionDeniedError(
                f"Messages can be edited for {window} seconds.", code="edit_window_closed"
            )
        if content == message.content:
            return message
        _keep_previous(message, MessageEdit.Action.EDIT, user)
        message.content = content
        message.html = "" if message.type == MessageType.ENCRYPTED else rendering.render(content)
        message.edited_at = timezone.now()
        message.save(update_fields=["content", "html", "edited_at"])
        _audit(message, "edit", user)
        _publish_change(message, "message.updated")
    return message


def message_delete(*, user: User, message_id: int) -> Message:
    """Soft-deletes a message (its author, or an owner/admin of the conversation): the row
    stays as a tombstone and the content moves to ``MessageEdit``. Deleting twice is a no-op."""
    with transaction.atomic():
        message = message_locked(user, message_id)
        if message.deleted_at is not None:
            return message
        if message.sender_id != user.pk:
            role = (
                Participant.objects.filter(
                    ACTIVE_MEMBER, conversation_id=message.conversation_id, user=user
                )
                .values_list("role", flat=True)
                .first()
            )
            if role not in MANAGER_ROLES:
                raise PermissionDeniedError(
                    "Only the author or a conversation admin may delete a message."
                )
        _keep_previous(message, MessageEdit.Action.DELETE, user)
        message.deleted_at = timezone.now()
        message.content = ""
        message.html = ""
        message.save(update_fields=["deleted_at", "content", "html"])
        _audit(message, "delete", user)
        _publish_change(message, "message.deleted")
    return message


def _audit(message: Message, verb: str, user: User) -> None:
    """The trail names the message and its conversation; its text stays out (field names only)."""
    audit_record(
        f"message.{verb}",
        "messaging.message",
        message.pk,
        changes={"conversation": str(message.conversation_id), "content": "changed"},
        actor=actor_of(user),
    )


def _publish_change(message: Message, type_: str) -> None:
    members = list(
        Participant.objects.filter(ACTIVE_MEMBER, conversation_id=message.conversation_id)
    )
    attached = list(message.attachments.all())
    realtime.publish_events(
        type_, {p.user_id: message_payload(message, p.user_id, attached) for p in members}
    )


def _keep_previous(message: Message, action: str, user: User) -> None:
    """Keeps what the message said before an edit or a delete (its history)."""
    MessageEdit.objects.create(
        message=message,
        action=action,
        previous_content=message.content,
        previous_metadata=message.metadata,
        edited_by=user,
    )
