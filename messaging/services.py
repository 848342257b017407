"""The verbs of messaging: every write goes through here.

Realtime events go out through ``communication.realtime.publish_event`` inside the transaction
that makes the change (persisted with the user's next ``seq``, sent after commit), so a client
never sees an event for a change that rolled back and a reconnecting one can replay it.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from django.db import IntegrityError, models, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from communication import identity, realtime
from communication.exceptions import APIError, ConflictError, NotFoundError, ServiceUnavailableError
from communication.models import User
from messaging import attachments, conf, presence, rendering, selectors
from messaging.models import (
    Attachment,
    Conversation,
    ConversationType,
    Message,
    MessageEdit,
    MessageType,
    NotificationLevel,
    Participant,
    Role,
    UserPresence,
)

logger = logging.getLogger(__name__)


class PermissionDeniedError(APIError):
    status_code = 403
    default_code = "permission_denied"
    default_detail = "You may not do this."


MANAGER_ROLES = (Role.OWNER, Role.ADMIN, Role.AGENT)


# ------------------------------------------------------------------------------- payloads


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _uid(user) -> str | None:
    return user.external_id if user is not None else None


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
        "sender": _uid(message.sender),
        "type": message.type,
        "content": "" if deleted else message.content,
        "html": "" if deleted else message.html,
        "client_id": message.client_id or None,
        "parent_id": message.parent_id,
        "attachments": []
        if deleted or viewer_pk is None
        else [attachment_payload(a, viewer_pk) for a in attached],
        "metadata": {} if deleted else message.metadata,
        "sent_at": _iso(message.sent_at),
        "edited_at": _iso(message.edited_at),
        "deleted_at": _iso(message.deleted_at),
    }


def participant_payload(participant: Participant) -> dict:
    return {
        "user_id": _uid(participant.user),
        "name": participant.user.name,
        "role": participant.role,
        "joined_at": _iso(participant.joined_at),
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
        "created_by": _uid(conversation.created_by) if conversation.created_by_id else None,
        "assigned_agent": (
            _uid(conversation.assigned_agent) if conversation.assigned_agent_id else None
        ),
        "participants": [participant_payload(p) for p in participants],
        "created_at": _iso(conversation.created_at),
        "last_activity_at": _iso(conversation.last_activity_at),
    }


def _publish_to_members(participants, type_: str, data: dict) -> None:
    # Sorted: publish_event locks each user's sequence row until commit, and two transactions
    # taking the same rows in different orders would deadlock.
    realtime.publish_events(type_, {p.user_id: data for p in participants})


# ------------------------------------------------------------------------------ participants


def _resolve(external_id: str) -> User:
    try:
        from communication.services import user_resolve

        return user_resolve(str(external_id))
    except identity.UnknownUserError:
        raise APIError(
            f"Unknown user {external_id!r}.",
            code="unknown_user",
            fields={"participants": [f"Unknown user {external_id!r}."]},
        ) from None
    except identity.IdentityUnavailableError:
        raise ServiceUnavailableError(
            "The identity service cannot be reached to look up a participant."
        ) from None


def _direct_key(a, b) -> str:
    return ":".join(sorted([str(a.pk), str(b.pk)]))


def conversation_create(
    *,
    user: User,
    type: str,
    participants: list[str],
    title: str = "",
    metadata: dict | None = None,
) -> tuple[Conversation, bool]:
    """Creates a conversation; returns it and whether it is new.

    A direct conversation exists once per pair of users: a second create (by either of them)
    returns the first, and the caller rejoins it if they had left.
    """
    others: list[User] = []
    for external_id in dict.fromkeys(participants):
        if external_id == user.external_id:
            continue
        others.append(_resolve(external_id))
    if len(others) + 1 > conf.get("MESSAGING_MAX_PARTICIPANTS"):
        raise APIError("Too many participants.", fields={"participants": ["Too many."]})
    if type == ConversationType.DIRECT:
        if len(others) != 1:
            raise APIError(
                "A direct conversation has exactly one other participant.",
                fields={"participants": ["Give exactly one other user."]},
            )
        key = _direct_key(user, others[0])
        existing = Conversation.objects.filter(type=type, direct_key=key).first()
        if existing is not None:
            _rejoin_direct(existing, user)
            return existing, False
        try:
            with transaction.atomic():
                return _create(user, type, others, title, metadata, direct_key=key), True
        except IntegrityError:
            # Both users created it at the same moment: the other transaction won.
            existing = Conversation.objects.get(type=type, direct_key=key)
            _rejoin_direct(existing, user)
            return existing, False
    if type == ConversationType.SUPPORT and others:
        raise APIError(
            "A support conversation starts with its requester only; agents are assigned.",
            fields={"participants": ["Leave empty for support conversations."]},
        )
    with transaction.atomic():
        return _create(user, type, others, title, metadata), True


def _rejoin_direct(conversation: Conversation, user: User) -> None:
    Participant.objects.filter(conversation=conversation, user=user, left_at__isnull=False).update(
        left_at=None, joined_at=timezone.now()
    )


def _create(user, type_, others, title, metadata, direct_key=None) -> Conversation:
    conversation = Conversation.objects.create(
        type=type_,
        title=title or "",
        metadata=metadata or {},
        created_by=user,
        direct_key=direct_key,
        last_activity_at=timezone.now(),
    )
    creator_role = Role.MEMBER if type_ == ConversationType.DIRECT else Role.OWNER
    rows = [Participant(conversation=conversation, user=user, role=creator_role)]
    rows += [Participant(conversation=conversation, user=o, role=Role.MEMBER) for o in others]
    Participant.objects.bulk_create(rows)
    payload = conversation_payload(conversation, rows)
    for row in sorted(rows, key=lambda r: str(r.user_id)):
        if row.user_id != user.pk:
            realtime.publish_event(
                row.user_id,
                "participant.added",
                {
                    "conversation_id": str(conversation.id),
                    "user_id": row.user.external_id,
                    "role": row.role,
                    "by": user.external_id,
                    "conversation": payload,
                },
            )
    return conversation


def conversation_update(
    *, user: User, conversation_id, title: str | None = None, metadata: dict | None = None
) -> Conversation:
    """Renames a conversation or replaces its metadata (owner/admin of a group or support
    conversation; either participant of a direct one)."""
    with transaction.atomic():
        me = _member_locked(user, conversation_id)
        conversation = me.conversation
        if conversation.type != ConversationType.DIRECT and me.role not in MANAGER_ROLES:
            raise PermissionDeniedError("Only an owner or admin may change this conversation.")
        fields = []
        if title is not None:
            conversation.title = title
            fields.append("title")
        if metadata is not None:
            conversation.metadata = metadata
            fields.append("metadata")
        if fields:
            conversation.save(update_fields=fields + ["updated_at"])
            members = list(selectors.active_participants(conversation.id))
            _publish_to_members(
                members,
                "conversation.updated",
                {
                    "conversation_id": str(conversation.id),
                    "title": conversation.title,
                    "metadata": conversation.metadata,
                    "by": user.external_id,
                },
            )
    return conversation


def _members_locked(user, conversation_id) -> tuple[Participant, list[Participant]]:
    """The caller's membership and every active member (with their users), the conversation row
    locked as in ``_member_locked``: one query fewer for a send, which needs both."""
    conversation = (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("created_by", "assigned_agent")
        .filter(pk=conversation_id)
        .first()
    )
    if conversation is None:
        raise NotFoundError("Conversation not found.")
    members = list(
        Participant.objects.filter(conversation=conversation, left_at__isnull=True).select_related(
            "user"
        )
    )
    me = next((p for p in members if p.user_id == user.pk), None)
    if me is None:
        raise NotFoundError("Conversation not found.")
    for p in members:
        p.conversation = conversation
    return me, members


def _member_locked(user, conversation_id) -> Participant:
    """The caller's membership, with the conversation row locked.

    Every write to a conversation (messages, participants, title) takes the conversation row
    first and only then touches participant rows, so two writers never hold participant rows in
    opposite orders (a send updates the sender's and the recipients' watermarks).
    """
    conversation = (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("created_by", "assigned_agent")
        .filter(pk=conversation_id)
        .first()
    )
    participant = (
        Participant.objects.filter(
            user=user, conversation_id=conversation_id, left_at__isnull=True
        ).first()
        if conversation is not None
        else None
    )
    if participant is None:
        raise NotFoundError("Conversation not found.")
    participant.conversation = conversation
    return participant


def _system_message(conversation: Conversation, actor: User, text: str, **metadata) -> Message:
    return _store_message(
        conversation=conversation,
        sender=actor,
        content=text,
        type_=MessageType.SYSTEM,
        metadata=metadata,
    )


def participant_add(
    *, user: User, conversation_id, user_id: str, role: str = Role.MEMBER
) -> tuple[Participant, bool]:
    """Adds ``user_id`` (an owner's or admin's act); a system message records it.

    Returns the membership and whether it is new (an active member is returned as is)."""
    if role not in (Role.MEMBER, Role.ADMIN, Role.AGENT):
        raise APIError("Role must be member, admin or agent.", fields={"role": ["Invalid role."]})
    target = _resolve(user_id)
    if role == Role.AGENT and "support_agent" not in target.roles:
        raise APIError(
            "Only support agents can take the agent role.", fields={"role": ["Not an agent."]}
        )
    with transaction.atomic():
        me = _member_locked(user, conversation_id)
        conversation = me.conversation
        if conversation.type == ConversationType.DIRECT:
            raise ConflictError("A direct conversation has exactly two participants.")
        if me.role not in MANAGER_ROLES:
            raise PermissionDeniedError("Only an owner or admin may add participants.")
        return _add(conversation, target, role, actor=user)


def _add(conversation, target, role, *, actor) -> tuple[Participant, bool]:
    existing = Participant.objects.filter(conversation=conversation, user=target).first()
    if existing is not None and existing.left_at is None:
        return existing, False
    if existing is not None:
        existing.left_at = None
        existing.role = role
        existing.joined_at = timezone.now()
        existing.save(update_fields=["left_at", "role", "joined_at"])
        participant = existing
    else:
        participant = Participant.objects.create(conversation=conversation, user=target, role=role)
    members = list(selectors.active_participants(conversation.id))
    _publish_to_members(
        members,
        "participant.added",
        {
            "conversation_id": str(conversation.id),
            "user_id": target.external_id,
            "role": role,
            "by": _uid(actor),
            "conversation": conversation_payload(conversation, members),
        },
    )
    _system_message(
        conversation,
        actor,
        f"{_name(actor)} added {_name(target)}",
        event="participant.added",
        user_id=target.external_id,
        role=role,
    )
    return participant, True


def _name(user) -> str:
    return (user.name or user.external_id or user.username) if user else "someone"


def participant_remove(*, user: User, conversation_id, user_id: str) -> None:
    """Removes ``user_id`` (owner/admin), or the caller themselves (leaving)."""
    with transaction.atomic():
        me = _member_locked(user, conversation_id)
        conversation = me.conversation
        if user_id == user.external_id:
            target_row = me
        else:
            if me.role not in MANAGER_ROLES:
                raise PermissionDeniedError("Only an owner or admin may remove participants.")
            target_row = (
                Participant.objects.select_for_update()
                .select_related("user")
                .filter(conversation=conversation, user__external_id=user_id, left_at__isnull=True)
                .first()
            )
            if target_row is None:
                raise NotFoundError("Participant not found.")
            if target_row.role == Role.OWNER and me.role != Role.OWNER:
                raise PermissionDeniedError("Only an owner may remove an owner.")
        _remove(conversation, target_row, actor=user)


def _remove(conversation, row: Participant, *, actor) -> None:
    members = list(selectors.active_participants(conversation.id))
    row.left_at = timezone.now()
    row.save(update_fields=["left_at"])
    if conversation.assigned_agent_id == row.user_id:
        conversation.assigned_agent = None
        conversation.save(update_fields=["assigned_agent", "updated_at"])
    _publish_to_members(
        members,
        "participant.removed",
        {
            "conversation_id": str(conversation.id),
            "user_id": row.user.external_id,
            "by": _uid(actor),
        },
    )
    leaving = actor is not None and row.user_id == actor.pk
    text = f"{_name(actor)} left" if leaving else f"{_name(actor)} removed {_name(row.user)}"
    _system_message(
        conversation, actor, text, event="participant.removed", user_id=row.user.external_id
    )


def conversation_leave(*, user: User, conversation_id) -> None:
    participant_remove(user=user, conversation_id=conversation_id, user_id=user.external_id)


def conversation_mute(
    *, user: User, conversation_id, muted: bool = True, until: dt.datetime | None = None
) -> Participant:
    """Mutes offline notifications for the caller, until ``until`` (None: until unmuted)."""
    me = selectors.participant_get(user=user, conversation_id=conversation_id)
    me.muted = muted
    me.muted_until = until if muted else None
    me.save(update_fields=["muted", "muted_until"])
    return me


def support_assign(*, conversation: Conversation, agent: User, by: User | None = None) -> None:
    """Assigns a support conversation to ``agent`` (a user with the ``support_agent`` role), who
    joins it with the role ``agent``; a previous agent leaves."""
    if conversation.type != ConversationType.SUPPORT:
        raise APIError("Only support conversations are assigned to agents.")
    if "support_agent" not in (agent.roles or []):
        raise APIError(f"{agent} is not a support agent.", fields={"agent": ["Not an agent."]})
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        previous = conversation.assigned_agent_id
        if previous == agent.pk:
            return
        if previous is not None:
            row = (
                Participant.objects.select_related("user")
                .filter(conversation=conversation, user_id=previous, left_at__isnull=True)
                .first()
            )
            if row is not None:
                _remove(conversation, row, actor=by or row.user)
        conversation.assigned_agent = agent
        conversation.save(update_fields=["assigned_agent", "updated_at"])
        _add(conversation, agent, Role.AGENT, actor=by or agent)


# ---------------------------------------------------------------------------------- messages


def _store_message(
    *,
    conversation: Conversation,
    sender: User,
    content: str,
    type_: str = MessageType.TEXT,
    client_id: str = "",
    parent_id=None,
    metadata=None,
    attached: list[Attachment] | None = None,
    members: list[Participant] | None = None,
) -> Message:
    """Writes a message, moves the conversation's activity, publishes ``message.created`` to
    every member and schedules offline notifications. Runs inside the caller's transaction."""
    html = "" if type_ == MessageType.ENCRYPTED else rendering.render(content)
    message = Message.objects.create(
        conversation=conversation,
        sender=sender,
        type=type_,
        content=content,
        html=html,
        client_id=client_id,
        parent_id=parent_id,
        metadata=metadata or {},
    )
    attached = attached or []
    if attached:
        Attachment.objects.filter(id__in=[a.id for a in attached]).update(message=message)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message=message, last_activity_at=message.sent_at
    )
    if members is None:
        members = list(
            Participant.objects.filter(
                conversation=conversation, left_at__isnull=True
            ).select_related("user")
        )
    recipients = [p for p in members if p.user_id != sender.pk]
    online = presence.online([str(p.user_id) for p in recipients]) if recipients else set()
    # The sender has read what they wrote; a recipient with a socket open has it delivered (the
    # event is on its way), the others when they fetch it or read. One statement, under the
    # conversation lock the caller holds, so the newest message is this one.
    touched = [p.pk for p in members if p.user_id == sender.pk or str(p.user_id) in online]
    if touched:
        Participant.objects.filter(pk__in=touched).update(
            last_delivered_message=message,
            last_read_message=Case(
                When(user_id=sender.pk, then=Value(message.id)),
                default=F("last_read_message"),
                output_field=models.BigIntegerField(),
            ),
        )
    message.sender = sender
    shared = message_payload(message, None, []) if not attached else None
    realtime.publish_events(
        "message.created",
        {
            p.user_id: shared
            if shared is not None
            else message_payload(message, p.user_id, attached)
            for p in members
        },
    )
    if type_ != MessageType.SYSTEM:
        offline = [p for p in recipients if str(p.user_id) not in online and _wants_notification(p)]
        if offline:
            transaction.on_commit(lambda: _schedule_offline_notifications(offline, conversation))
    return message


def _wants_notification(p: Participant) -> bool:
    if p.notification_level == NotificationLevel.NONE:
        return False
    if p.muted and (p.muted_until is None or p.muted_until > timezone.now()):
        return False
    return True


def _schedule_offline_notifications(participants: list[Participant], conversation) -> None:
    """The first message of a burst to an offline participant schedules one task, after
    ``MESSAGING_NOTIFY_DELAY_SECONDS``; later messages of the burst find the claim taken and
    are covered by that task (which notifies once for everything unread)."""
    from communication.celery import queue
    from messaging.tasks import notify_offline

    delay = conf.get("MESSAGING_NOTIFY_DELAY_SECONDS")
    for p in participants:
        try:
            if not presence.notify_claim(p.user_id, conversation.id, delay):
                continue
        except Exception:  # Redis down: notify per message rather than not at all
            logger.warning("notify claim unavailable", exc_info=True)
        notify_offline.apply_async((p.pk,), countdown=delay or None, queue=queue("default"))


def message_send(
    *,
    user: User,
    conversation_id,
    content: str = "",
    client_id: str = "",
    parent_id: int | None = None,
    attachment_ids: list | tuple = (),
    metadata: dict | None = None,
    type: str = MessageType.TEXT,
) -> tuple[Message, bool]:
    """Posts a message; returns it and whether it is new.

    Idempotent on ``client_id`` per sender and conversation: a replay returns the first message
    (its content is not compared). ``parent_id`` makes it a thread reply (threads are one level:
    a reply to a reply joins the root's thread). ``attachment_ids`` are the caller's own unsent
    uploads.
    """
    content = content or ""
    if len(content) > conf.get("MESSAGING_MAX_CONTENT_LENGTH"):
        raise APIError("The message is too long.", fields={"content": ["Too long."]})
    if type not in (MessageType.TEXT, MessageType.ENCRYPTED):
        raise APIError("Type must be text or encrypted.", fields={"type": ["Invalid type."]})
    if not content.strip() and not attachment_ids:
        raise APIError("A message needs content or attachments.", fields={"content": ["Empty."]})
    client_id = (client_id or "")[:64]
    with transaction.atomic():
        me, members = _members_locked(user, conversation_id)
        conversation = me.conversation
        if client_id:
            # Under the conversation lock no other send of this id can be in flight.
            first = (
                Message.objects.filter(conversation=conversation, sender=user, client_id=client_id)
                .select_related("sender")
                .first()
            )
            if first is not None:
                return first, False
        parent = None
        if parent_id is not None:
            parent = Message.objects.filter(id=parent_id, conversation=conversation).first()
            if parent is None:
                raise APIError(
                    "The parent message is not in this conversation.",
                    code="invalid_parent",
                    fields={"parent_id": ["Unknown message."]},
                )
            parent_id = parent.parent_id or parent.id
        attached: list[Attachment] = []
        if attachment_ids:
            ids = _uuids(attachment_ids)
            attached = list(
                Attachment.objects.select_for_update().filter(
                    id__in=ids, uploader=user, message__isnull=True
                )
            )
            if len(attached) != len(set(ids)):
                raise APIError(
                    "Unknown or already sent attachment.",
                    code="invalid_attachment",
                    fields={"attachments": ["Unknown or already sent."]},
                )
        if type == MessageType.TEXT and attached and not content.strip():
            type = MessageType.ATTACHMENT
        message = _store_message(
            conversation=conversation,
            sender=user,
            content=content,
            type_=type,
            client_id=client_id,
            parent_id=parent_id,
            metadata=metadata,
            attached=attached,
            members=members,
        )
    return message, True


def _uuids(values) -> list[uuid.UUID]:
    out = []
    for v in values:
        try:
            out.append(uuid.UUID(str(v)))
        except ValueError:
            raise APIError(
                f"{v!r} is not an attachment id.",
                code="invalid_attachment",
                fields={"attachments": ["Not an id."]},
            ) from None
    return out


def _message_locked(user, message_id) -> Message:
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("sender", "conversation")
        .filter(id=message_id)
        .first()
    )
    if message is None or not selectors.is_member(user.pk, message.conversation_id):
        raise NotFoundError("Message not found.")
    return message


def message_edit(*, user: User, message_id, content: str) -> Message:
    """Replaces the content of the caller's own message within the edit window; the previous
    content is kept in ``MessageEdit``."""
    if not content or not content.strip():
        raise APIError("Content cannot be empty.", fields={"content": ["Empty."]})
    if len(content) > conf.get("MESSAGING_MAX_CONTENT_LENGTH"):
        raise APIError("The message is too long.", fields={"content": ["Too long."]})
    with transaction.atomic():
        message = _message_locked(user, message_id)
        if message.sender_id != user.pk or message.type == MessageType.SYSTEM:
            raise PermissionDeniedError("Only the author may edit a message.")
        if message.deleted_at is not None:
            raise ConflictError("The message was deleted.")
        window = conf.get("MESSAGING_EDIT_WINDOW_SECONDS")
        if timezone.now() - message.sent_at > dt.timedelta(seconds=window):
            raise PermissionDeniedError(
                f"Messages can be edited for {window} seconds.", code="edit_window_closed"
            )
        if content == message.content:
            return message
        MessageEdit.objects.create(
            message=message,
            action=MessageEdit.Action.EDIT,
            previous_content=message.content,
            previous_metadata=message.metadata,
            edited_by=user,
        )
        message.content = content
        message.html = "" if message.type == MessageType.ENCRYPTED else rendering.render(content)
        message.edited_at = timezone.now()
        message.save(update_fields=["content", "html", "edited_at"])
        _publish_message_change(message, "message.updated")
    return message


def message_delete(*, user: User, message_id) -> Message:
    """Soft-deletes a message (its author, or an owner/admin of the conversation): the row
    stays as a tombstone and the content moves to ``MessageEdit``. Deleting twice is a no-op."""
    with transaction.atomic():
        message = _message_locked(user, message_id)
        if message.deleted_at is not None:
            return message
        if message.sender_id != user.pk:
            role = (
                Participant.objects.filter(
                    conversation_id=message.conversation_id, user=user, left_at__isnull=True
                )
                .values_list("role", flat=True)
                .first()
            )
            if role not in MANAGER_ROLES:
                raise PermissionDeniedError(
                    "Only the author or a conversation admin may delete a message."
                )
        MessageEdit.objects.create(
            message=message,
            action=MessageEdit.Action.DELETE,
            previous_content=message.content,
            previous_metadata=message.metadata,
            edited_by=user,
        )
        message.deleted_at = timezone.now()
        message.content = ""
        message.html = ""
        message.save(update_fields=["deleted_at", "content", "html"])
        _publish_message_change(message, "message.deleted")
    return message


def _publish_message_change(message: Message, type_: str) -> None:
    members = list(
        Participant.objects.filter(conversation_id=message.conversation_id, left_at__isnull=True)
    )
    attached = list(message.attachments.all())
    realtime.publish_events(
        type_, {p.user_id: message_payload(message, p.user_id, attached) for p in members}
    )


# ---------------------------------------------------------------------------------- receipts


def _advance(participant_pk, message_id: int, *, read: bool) -> bool:
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


def _publish_receipt(conversation_id, user: User) -> None:
    rows = list(Participant.objects.filter(conversation_id=conversation_id, left_at__isnull=True))
    mine = next((r for r in rows if r.user_id == user.pk), None)
    if mine is None:
        return
    _publish_to_members(
        rows,
        "receipt",
        {
            "conversation_id": str(conversation_id),
            "user_id": user.external_id,
            "delivered_up_to": mine.last_delivered_message_id,
            "read_up_to": mine.last_read_message_id,
        },
    )


def conversation_mark_read(*, user: User, conversation_id, message_id) -> Participant:
    """Moves the caller's read (and delivered) watermark up to ``message_id``; every member gets
    a ``receipt`` when it moved. Marking an older message read changes nothing."""
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
            _publish_receipt(conversation_id, user)
    me.refresh_from_db()
    return me


def conversation_mark_delivered(*, user: User, conversation_id, message_id: int) -> None:
    """The caller fetched messages up to ``message_id``: delivered, with a receipt if it moved."""
    with transaction.atomic():
        me = Participant.objects.filter(
            user=user, conversation_id=conversation_id, left_at__isnull=True
        ).first()
        if me is not None and _advance(me.pk, message_id, read=False):
            _publish_receipt(conversation_id, user)


# ------------------------------------------------------------------------ offline notifications


def participant_notify_offline(participant_id: int) -> str:
    """Sends one ``messages`` notification for everything the participant has not read nor been
    notified of yet (a burst of messages gives one). Safe to run twice: ``notified_up_to`` is
    claimed with a conditional update in the same transaction as the send, whose idempotency key
    also names the last message covered."""
    from notifications.services import notification_send

    p = Participant.objects.select_related("user", "conversation").filter(pk=participant_id).first()
    if p is None:
        return "gone"
    presence.notify_release(p.user_id, p.conversation_id)
    if p.left_at is not None or not _wants_notification(p):
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
        senders = list(dict.fromkeys(_name(m.sender) for m in pending))
        if conversation.type == ConversationType.DIRECT or not conversation.title:
            title = ", ".join(senders[:3])
        else:
            title = conversation.title
        if len(pending) == 1:
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
            },
            idempotency_key=f"messages:{p.user_id}:{conversation.id}:{last.id}",
        )
    return "sent"


def message_preview(message: Message) -> str:
    if message.type == MessageType.ENCRYPTED:
        return "Encrypted message"
    if message.type == MessageType.ATTACHMENT and not message.content:
        return "Sent an attachment"
    return rendering.preview(message.content)


# ---------------------------------------------------------------------------------- presence


def presence_seen(user_pk, when: dt.datetime | None = None) -> dt.datetime:
    """Persists when the user was last seen online."""
    when = when or timezone.now()
    UserPresence.objects.update_or_create(user_id=user_pk, defaults={"last_seen_at": when})
    return when


def presence_sweep() -> int:
    """Turns offline the users whose sockets' heartbeats all lapsed (their ASGI process died):
    persists their last seen and tells their contacts."""
    count = 0
    for user_pk, last in presence.lapsed():
        when = dt.datetime.fromtimestamp(last, tz=dt.UTC)
        user = User.objects.filter(pk=user_pk).first()
        if user is None:
            continue
        with transaction.atomic():
            presence_seen(user_pk, when)
            event = presence_event(user, "offline", when)
            for pk in selectors.contacts_of(user_pk):
                realtime.publish(pk, event)
        count += 1
    return count


def presence_event(user: User, state: str, last_seen: dt.datetime | None) -> dict:
    return {
        "type": "presence",
        "data": {"user_id": user.external_id, "state": state, "last_seen": _iso(last_seen)},
    }


# ------------------------------------------------------------------------------- attachments


def attachment_upload(*, user: User, data: bytes, name: str = "") -> Attachment:
    """Checks, re-encodes and stores an upload; raises 413 (size), 415 (type), 400 (broken)."""
    processed = attachments.process(data)
    attachment_id = uuid.uuid4()
    file_name, thumb_name = attachments.save(attachment_id, processed)
    return Attachment.objects.create(
        id=attachment_id,
        uploader=user,
        file=file_name,
        thumbnail=thumb_name,
        content_type=processed.content_type,
        size=len(processed.content),
        width=processed.width,
        height=processed.height,
        original_name=(name or "")[:255],
    )
