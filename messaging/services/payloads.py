"""How messaging's objects look in API responses and websocket events.

The websocket events persist these dicts (a reconnecting client replays them); the API builds
its responses from them too.
"""

from __future__ import annotations

import datetime as dt

from messaging import attachments, rendering
from messaging.models import Attachment, Conversation, Message, MessageType, Participant


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def external_id(user) -> str | None:
    return user.external_id if user is not None else None


def display_name(user) -> str:
    return (user.name or user.external_id or user.username) if user else "someone"


def attachment_payload(attachment: Attachment, viewer_pk) -> dict:
    return {
        "id": str(attachment.id),
        "content_type": attachment.content_type,
        "size": attachment.size,
        "width": attachment.width,
        "height": attachment.height,
        "url": attachments.signed_url(attachment.id, viewer_pk),
        "thumbnail_url": (
            attachments.signed_url(attachment.id, viewer_pk, variant="thumb")
            if attachment.thumbnail
            else None
        ),
    }


def message_payload(message: Message, viewer_pk=None, attached=None) -> dict:
    """A message as the API and the websocket events show it; a deleted one is a tombstone.

    ``attached``: the message's attachments when the caller already has them (else prefetched
    ``message.attachments``); their links are signed for ``viewer_pk``.
    """
    deleted = message.deleted_at is not None
    if attached is None:
        attached = list(message.attachments.all()) if message.pk else []
    return {
        "id": message.id,
        "conversation_id": str(message.conversation_id),
        "sender": external_id(message.sender),
        "type": message.type,
        "content": "" if deleted else message.content,
        "html": "" if deleted else message.html,
        "client_id": message.client_id or None,
        "parent_id": message.parent_id,
        "attachments": []
        if deleted or viewer_pk is None
        else [attachment_payload(a, viewer_pk) for a in attached],
        "metadata": {} if deleted else message.metadata,
        "sent_at": iso(message.sent_at),
        "edited_at": iso(message.edited_at),
        "deleted_at": iso(message.deleted_at),
    }


def participant_payload(participant: Participant) -> dict:
    return {
        "user_id": external_id(participant.user),
        "name": participant.user.name,
        "role": participant.role,
        "joined_at": iso(participant.joined_at),
        "read_up_to": participant.last_read_message_id,
        "delivered_up_to": participant.last_delivered_message_id,
    }


def conversation_payload(conversation: Conversation, participants: list[Participant]) -> dict:
    return {
        "id": str(conversation.id),
        "type": conversation.type,
        "title": conversation.title,
        "metadata": conversation.metadata,
        "archived": conversation.archived,
        "created_by": external_id(conversation.created_by) if conversation.created_by_id else None,
        "assigned_agent": (
            external_id(conversation.assigned_agent) if conversation.assigned_agent_id else None
        ),
        "participants": [participant_payload(p) for p in participants],
        "created_at": iso(conversation.created_at),
        "last_activity_at": iso(conversation.last_activity_at),
    }


def message_preview(message: Message) -> str:
    if message.type == MessageType.ENCRYPTED:
        return "Encrypted message"
    if message.type == MessageType.ATTACHMENT and not message.content:
        return "Sent an attachment"
    return rendering.preview(message.content)


def presence_event(user, state: str, last_seen: dt.datetime | None) -> dict:
    return {
        "type": "presence",
        "data": {"user_id": user.external_id, "state": state, "last_seen": iso(last_seen)},
    }
