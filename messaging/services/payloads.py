"""How messaging's objects look in API responses and websocket events.

The websocket events persist these dicts (a reconnecting client replays them); the API builds
its responses from them too.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

from communication.models import User
from messaging import attachments, rendering
from messaging.models import Attachment, Conversation, Message, MessageType, Participant
from messaging.services.e2e import envelope_of


class AttachmentPayload(TypedDict):
    id: str
    content_type: str
    size: int
    width: int | None
    height: int | None
    url: str
    thumbnail_url: str | None


class MessagePayload(TypedDict):
    id: int
    conversation_id: str
    sender: str | None
    type: str
    content: str
    html: str
    client_id: str | None
    parent_id: int | None
    attachments: list[AttachmentPayload]
    metadata: Any  # the client's own JSON
    # The envelope of a message in an end-to-end encrypted conversation (its content is "").
    encrypted: dict[str, Any] | None
    sent_at: str | None
    edited_at: str | None
    deleted_at: str | None


class ParticipantPayload(TypedDict):
    user_id: str | None
    name: str
    role: str
    joined_at: str | None
    read_up_to: int | None
    delivered_up_to: int | None


class ConversationPayload(TypedDict):
    id: str
    type: str
    title: str
    metadata: Any  # the client's own JSON
    archived: bool
    encrypted: bool
    created_by: str | None
    assigned_agent: str | None
    participants: list[ParticipantPayload]
    created_at: str | None
    last_activity_at: str | None


class PresenceData(TypedDict):
    user_id: str | None
    state: str
    last_seen: str | None


class PresenceEvent(TypedDict):
    type: Literal["presence"]
    data: PresenceData


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def external_id(user: User | None) -> str | None:
    return user.external_id if user is not None else None


def display_name(user: User | None) -> str:
    return (user.name or user.external_id or user.username) if user else "someone"


def attachment_payload(attachment: Attachment, viewer_pk: uuid.UUID | str) -> AttachmentPayload:
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


def message_payload(
    message: Message,
    viewer_pk: uuid.UUID | str | None = None,
    attached: Sequence[Attachment] | None = None,
) -> MessagePayload:
    """A message as the API and the websocket events show it; a deleted one is a tombstone.

    ``attached``: the message's attachments when the caller already has them (else prefetched
    ``message.attachments``); their links are signed for ``viewer_pk``.
    """
    deleted = message.deleted_at is not None
    envelope = None if deleted else envelope_of(message)
    if attached is None:
        attached = list(message.attachments.all()) if message.pk else []
    return {
        "id": message.id,
        "conversation_id": str(message.conversation_id),
        "sender": external_id(message.sender),
        "type": message.type,
        "content": "" if deleted or message.type == MessageType.ENCRYPTED else message.content,
        "html": "" if deleted else message.html,
        "client_id": message.client_id or None,
        "parent_id": message.parent_id,
        "attachments": []
        if deleted or viewer_pk is None
        else [attachment_payload(a, viewer_pk) for a in attached],
        "metadata": {} if deleted else message.metadata,
        "encrypted": envelope,
        "sent_at": iso(message.sent_at),
        "edited_at": iso(message.edited_at),
        "deleted_at": iso(message.deleted_at),
    }


def participant_payload(participant: Participant) -> ParticipantPayload:
    return {
        "user_id": external_id(participant.user),
        "name": participant.user.name,
        "role": participant.role,
        "joined_at": iso(participant.joined_at),
        "read_up_to": participant.last_read_message_id,
        "delivered_up_to": participant.last_delivered_message_id,
    }


def conversation_payload(
    conversation: Conversation, participants: Sequence[Participant]
) -> ConversationPayload:
    return {
        "id": str(conversation.id),
        "type": conversation.type,
        "title": conversation.title,
        "metadata": conversation.metadata,
        "archived": conversation.archived,
        "encrypted": conversation.encrypted,
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


def presence_event(user: User, state: str, last_seen: dt.datetime | None) -> PresenceEvent:
    return {
        "type": "presence",
        "data": {"user_id": user.external_id, "state": state, "last_seen": iso(last_seen)},
    }
