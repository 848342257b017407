"""Offline notifications: a participant without a socket open hears of new messages through
the notifications app (one ``messages`` notification per burst), in the inbox at once, then by
push and by email later unless they read the conversation first (an escalation, cancelled by
its ``cancellation_key`` when the conversation is read: ``messaging.services.receipts``)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from communication.celery import app, queue
from messaging import conf, presence
from messaging.models import ConversationType, Message, MessageType, NotificationLevel, Participant
from messaging.services.payloads import display_name, message_preview
from notifications.escalation import escalation_clean
from notifications.services import notification_send

logger = logging.getLogger(__name__)

# ``messaging.tasks`` calls this module; this module enqueues its task by name rather than
# importing it back.
NOTIFY_OFFLINE_TASK = "messaging.tasks.notify_offline"


def offline_key(user_pk: object, conversation_id: object, message_id: int) -> str:
    """The idempotency key of a recipient's notification up to a message; erasure finds a
    conversation's notifications by it (``messaging.compliance.OFFLINE_KEY_OF``)."""
    return f"messages:{user_pk}:{conversation_id}:{message_id}"


def offline_cancellation_key(user_pk: object, conversation_id: object) -> str:
    """The ``cancellation_key`` of a recipient's notifications about a conversation: reading the
    conversation cancels what of them is still pending."""
    return f"messages:{user_pk}:{conversation_id}"


def offline_escalation() -> list[dict[str, Any]]:
    """In-app at once, then push and email after their configured delays (a channel whose delay
    is empty is left out). A misconfigured delay raises, as a bad send body would."""
    steps: list[dict[str, Any]] = [{"channel": "in_app"}]
    for channel, name in (
        ("push", "MESSAGING_NOTIFY_PUSH_AFTER"),
        ("email", "MESSAGING_NOTIFY_EMAIL_AFTER"),
    ):
        after = str(conf.get(name) or "").strip()
        if after:
            steps.append({"channel": channel, "after": after})
    return escalation_clean(steps)


def wants_notification(p: Participant) -> bool:
    if p.notification_level == NotificationLevel.NONE:
        return False
    if p.muted and (p.muted_until is None or p.muted_until > timezone.now()):
        return False
    return True


def notify_offline_later(offline: list[Participant], conversation_id: uuid.UUID | str) -> None:
    """Schedules the offline participants' notifications once the message is committed."""
    if offline:
        transaction.on_commit(lambda: schedule_offline_notifications(offline, conversation_id))


def schedule_offline_notifications(
    participants: list[Participant], conversation_id: uuid.UUID | str
) -> None:
    """The first message of a burst to an offline participant schedules one task, after
    ``MESSAGING_NOTIFY_DELAY_SECONDS``; later messages of the burst find the claim taken and
    are covered by that task (which notifies once for everything unread)."""
    delay = conf.get("MESSAGING_NOTIFY_DELAY_SECONDS")
    for p in participants:
        try:
            if not presence.notify_claim(p.user_id, conversation_id, delay):
                continue
        except Exception:  # Redis down: notify per message rather than not at all
            logger.warning("notify claim unavailable", exc_info=True)
        app.signature(
            NOTIFY_OFFLINE_TASK, args=(p.pk,), countdown=delay or None, queue=queue("default")
        ).apply_async()


def participant_notify_offline(participant_id: int) -> str:
    """Sends one ``messages`` notification for everything the participant has not read nor been
    notified of yet (a burst of messages gives one). Safe to run twice: ``notified_up_to`` is
    claimed with a conditional update in the same transaction as the send, whose idempotency key
    also names the last message covered."""
    p = Participant.objects.select_related("user", "conversation").filter(pk=participant_id).first()
    if p is None:
        return "gone"
    presence.notify_release(p.user_id, p.conversation_id)
    if p.left_at is not None or not wants_notification(p):
        return "muted"
    if presence.online([str(p.user_id)]):
        return "online"
    floor = max(p.last_read_message_id or 0, p.notified_up_to)
    pending = list(
        Message.objects.filter(
            conversation_id=p.conversation_id, id__gt=floor, deleted_at__isnull=True
        )
        .exclude(sender=p.user)
        .exclude(type=MessageType.SYSTEM)
        .select_related("sender")
        .order_by("id")
    )
    if not pending:
        return "nothing"
    last = pending[-1]
    with transaction.atomic():
        claimed = Participant.objects.filter(pk=p.pk, notified_up_to=p.notified_up_to).update(
            notified_up_to=last.id
        )
        if not claimed:
            return "taken"
        conversation = p.conversation
        senders = list(dict.fromkeys(display_name(m.sender) for m in pending))
        if conversation.type == ConversationType.DIRECT or not conversation.title:
            title = ", ".join(senders[:3])
        else:
            title = conversation.title
        if conversation.encrypted:  # the server cannot read them, and says no more
            body = "New encrypted message"
            if len(pending) > 1:
                body = f"{len(pending)} new encrypted messages"
        elif len(pending) == 1:
            body = message_preview(last)
        else:
            body = f"{len(pending)} new messages: {message_preview(last)}"
        base = conf.get("MESSAGING_CONVERSATION_URL")
        notification_send(
            caller="messaging",
            payload={
                "recipients": [{"user_id": p.user.external_id}],
                "category": "messages",
                "channels": "auto",
                "content": {
                    "title": title[:200],
                    "body": body,
                    "action_url": base.format(conversation_id=conversation.id) if base else "",
                },
                "data": {
                    "conversation_id": str(conversation.id),
                    "message_id": last.id,
                    "count": len(pending),
                },
                "priority": "normal",
                "scheduled_at": None,
                "escalation": offline_escalation(),
                "cancellation_key": offline_cancellation_key(p.user_id, conversation.id),
            },
            idempotency_key=offline_key(p.user_id, conversation.id, last.id),
        )
    return "sent"
