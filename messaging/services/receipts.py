"""Read and delivered receipts: the watermarks each participant moves, never back."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.db.models import Q

from communication.exceptions import APIError
from communication.models import User
from messaging import selectors
from messaging.models import ACTIVE_MEMBER, Message, Participant
from messaging.services.access import publish_to_members
from messaging.services.offline import offline_cancellation_key
from notifications.services import cancellation_key_cancel

# The reason a pending push or email about a conversation records when reading it cancelled it.
CONVERSATION_READ = "conversation read"


def _advance(participant_pk: int, message_id: int, *, read: bool) -> bool:
    fields = {"last_delivered_message_id": message_id}
    cond = Q(last_delivered_message__isnull=True) | Q(last_delivered_message_id__lt=message_id)
    if read:
        fields["last_read_message_id"] = message_id
        cond |= Q(last_read_message__isnull=True) | Q(last_read_message_id__lt=message_id)
    if not read:
        return bool(Participant.objects.filter(cond, pk=participant_pk).update(**fields))
    # Neither watermark ever moves back; delivered is never behind read.
    row = Participant.objects.select_for_update().get(pk=participant_pk)
    changed = []
    if (row.last_read_message_id or 0) < message_id:
        row.last_read_message_id = message_id
        changed.append("last_read_message")
    if (row.last_delivered_message_id or 0) < message_id:
        row.last_delivered_message_id = message_id
        changed.append("last_delivered_message")
    if changed:
        row.save(update_fields=changed)
    return bool(changed)


def _publish_receipt(conversation_id: uuid.UUID | str, user: User) -> None:
    rows = list(Participant.objects.filter(ACTIVE_MEMBER, conversation_id=conversation_id))
    mine = next((r for r in rows if r.user_id == user.pk), None)
    if mine is None:
        return
    publish_to_members(
        rows,
        "receipt",
        {
            "conversation_id": str(conversation_id),
            "user_id": user.external_id,
            "delivered_up_to": mine.last_delivered_message_id,
            "read_up_to": mine.last_read_message_id,
        },
    )


def conversation_mark_read(
    *, user: User, conversation_id: uuid.UUID | str, message_id: int | str
) -> Participant:
    """Moves the caller's read (and delivered) watermark up to ``message_id``; every member gets
    a ``receipt`` when it moved, and the push or email still pending about the conversation
    (the offline notification's escalation) is cancelled in the same transaction. Marking an
    older message read changes nothing."""
    try:
        message_id = int(message_id)
    except (TypeError, ValueError):
        raise APIError(
            "message_id must be a message id.", fields={"message_id": ["Invalid."]}
        ) from None
    with transaction.atomic():
        me = selectors.participant_get(user=user, conversation_id=conversation_id)
        if not Message.objects.filter(id=message_id, conversation_id=conversation_id).exists():
            raise APIError(
                "The message is not in this conversation.",
                code="invalid_message",
                fields={"message_id": ["Unknown message."]},
            )
        if _advance(me.pk, message_id, read=True):
            cancellation_key_cancel(
                caller="messaging",
                key=offline_cancellation_key(user.pk, conversation_id),
                reason=CONVERSATION_READ,
                report_sent=False,
            )
            _publish_receipt(conversation_id, user)
    me.refresh_from_db()
    return me


def conversation_mark_delivered(
    *, user: User, conversation_id: uuid.UUID | str, message_id: int
) -> None:
    """The caller fetched messages up to ``message_id``: delivered, with a receipt if it moved."""
    with transaction.atomic():
        me = Participant.objects.filter(
            ACTIVE_MEMBER, user=user, conversation_id=conversation_id
        ).first()
        if me is not None and _advance(me.pk, message_id, read=False):
            _publish_receipt(conversation_id, user)
