"""The verbs of messaging: every write goes through here.

Realtime events go out through ``communication.realtime.publish_event`` inside the transaction
that makes the change (persisted with the user's next ``seq``, sent after commit), so a client
never sees an event for a change that rolled back and a reconnecting one can replay it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import RedisError

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
    """The caller's membership and every active member, the conversation row locked as in
    ``_member_locked``, in one statement (a send's first query; it needs both)."""
    members = list(
        Participant.objects.raw(
            "SELECT p.* FROM messaging_participant p "
            "JOIN messaging_conversation c ON c.id = p.conversation_id "
            "WHERE p.conversation_id = %s AND p.left_at IS NULL FOR UPDATE OF c",
            [conversation_id],
        )
    )
    me = next((p for p in members if p.user_id == user.pk), None)
    if me is None:
        raise NotFoundError("Conversation not found.")
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
        conversation_id=conversation.pk,
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


_INSERT_MESSAGE = (
    "INSERT INTO messaging_message (conversation_id, sender_id, type, content, html, parent_id, "
    "metadata, client_id, sent_at) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s) "
    "ON CONFLICT (conversation_id, sender_id, client_id) WHERE NOT (client_id = '') DO NOTHING "
    "RETURNING id"
)
# The conversation's activity and the watermarks a new message moves, in one statement.
_MARK_SENT = (
    "WITH c AS (UPDATE messaging_conversation SET last_message_id = %s, last_activity_at = %s "
    "WHERE id = %s) "
    "UPDATE messaging_participant SET last_delivered_message_id = %s, "
    "last_read_message_id = CASE WHEN user_id = %s THEN %s ELSE last_read_message_id END "
    "WHERE id = ANY(%s)"
)


def _store_message(
    *,
    conversation_id,
    sender: User,
    content: str,
    type_: str = MessageType.TEXT,
    client_id: str = "",
    parent_id=None,
    metadata=None,
    attached: list[Attachment] | None = None,
    members: list[Participant] | None = None,
) -> Message | None:
    """Writes a message, moves the conversation's activity, publishes ``message.created`` to
    every member and schedules offline notifications. Runs inside the caller's transaction,
    which holds the conversation lock. Returns None, having written nothing, when the sender
    already sent ``client_id`` here (the caller answers with that first message).

    The hot path of messaging: its statements are written out rather than built by the ORM,
    whose query compilation cost more than the database did.
    """
    html = "" if type_ == MessageType.ENCRYPTED else rendering.render(content)
    metadata = metadata or {}
    sent_at = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_MESSAGE,
            [
                conversation_id,
                sender.pk,
                type_,
                content,
                html,
                parent_id,
                json.dumps(metadata, cls=DjangoJSONEncoder),
                client_id,
                sent_at,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    message = Message(
        id=row[0],
        conversation_id=conversation_id,
        sender=sender,
        type=type_,
        content=content,
        html=html,
        client_id=client_id,
        parent_id=parent_id,
        metadata=metadata,
        sent_at=sent_at,
    )
    message._state.adding = False
    message._state.db = "default"
    attached = attached or []
    if attached:
        Attachment.objects.filter(id__in=[a.id for a in attached]).update(message=message)
    if members is None:
        members = list(
            Participant.objects.filter(conversation_id=conversation_id, left_at__isnull=True)
        )
    recipients = [p for p in members if p.user_id != sender.pk]
    online = _online([str(p.user_id) for p in recipients])
    # The sender has read what they wrote; a recipient with a socket open has it delivered (the
    # event is on its way), the others when they fetch it or read. One statement, under the
    # conversation lock the caller holds, so the newest message is this one.
    touched = [p.pk for p in members if p.user_id == sender.pk or str(p.user_id) in online]
    with connection.cursor() as cursor:
        cursor.execute(
            _MARK_SENT,
            [message.id, sent_at, conversation_id, message.id, sender.pk, message.id, touched],
        )
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
        _notify_offline_later(
            [p for p in recipients if str(p.user_id) not in online and _wants_notification(p)],
            conversation_id,
        )
    return message


# A text message in one statement, the hot path of messaging (every ``message.send``): lock the
# conversation, check the sender is a member, insert the message (a replay of ``client_id``
# inserts nothing), move the conversation's activity, the sender's watermarks and the delivered
# watermark of the recipients the caller already knows to be online, take every
# member's next ``seq`` (in user order, as ``realtime.publish_events`` does, so concurrent
# fan-outs cannot deadlock) and persist their ``message.created`` events. Its answer is one row
# per active member, with the message id and the member's ``seq`` when the message was written.
# One statement is atomic on its own: no BEGIN/COMMIT round trips and no lock held between
# round trips. The member list is the statement's snapshot, taken before the conversation
# lock is granted: a participant added while this send waited on it misses the live event
# (the message is in their history).
_SEND_TEXT = """
WITH conversation AS (
    SELECT id FROM messaging_conversation WHERE id = %(conversation)s FOR UPDATE
), members AS (
    SELECT p.id, p.user_id, p.muted, p.muted_until, p.notification_level
    FROM messaging_participant p JOIN conversation c ON c.id = p.conversation_id
    WHERE p.left_at IS NULL
), message AS (
    INSERT INTO messaging_message
        (conversation_id, sender_id, type, content, html, parent_id, metadata, client_id, sent_at)
    SELECT %(conversation)s, %(sender)s, %(type)s, %(content)s, %(html)s, %(parent)s::bigint,
        %(metadata)s::jsonb, %(client_id)s, %(sent_at)s
    WHERE EXISTS (SELECT 1 FROM members WHERE user_id = %(sender)s)
    ON CONFLICT (conversation_id, sender_id, client_id) WHERE NOT (client_id = '') DO NOTHING
    RETURNING id
), activity AS (
    UPDATE messaging_conversation c SET last_message_id = message.id,
        last_activity_at = %(sent_at)s
    FROM message WHERE c.id = %(conversation)s
), marks AS (
    UPDATE messaging_participant p SET last_delivered_message_id = message.id,
        last_read_message_id = CASE WHEN members.user_id = %(sender)s THEN message.id
            ELSE p.last_read_message_id END
    FROM message, members WHERE p.id = members.id
        AND (members.user_id = %(sender)s OR members.user_id = ANY(%(online)s::uuid[]))
), seqs AS (
    INSERT INTO communication_usersequence (user_id, last_seq)
    SELECT user_id, 1 FROM members WHERE EXISTS (SELECT 1 FROM message) ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET last_seq = communication_usersequence.last_seq + 1
    RETURNING user_id, last_seq
), events AS (
    INSERT INTO communication_realtimeevent (user_id, seq, type, data, created_at)
    SELECT seqs.user_id, seqs.last_seq, 'message.created',
        %(payload)s::jsonb || jsonb_build_object('id', message.id), now()
    FROM seqs, message
    RETURNING user_id, seq
)
SELECT m.id, m.user_id, m.muted, m.muted_until, m.notification_level,
    (SELECT id FROM message), e.seq
FROM members m LEFT JOIN events e ON e.user_id = m.user_id
"""

# Recipients with a socket open have the message delivered (its event is on the way). Outside
# the send's statement, so only ever forward.
_MARK_DELIVERED = (
    "UPDATE messaging_participant SET last_delivered_message_id = %(message)s "
    "WHERE id = ANY(%(participants)s) AND (last_delivered_message_id IS NULL "
    "OR last_delivered_message_id < %(message)s)"
)


class _TextSend:
    """One text message through ``_SEND_TEXT``: what goes in, and what its rows say. The sync
    ``_send_text`` (API, threads) and the async ``message_send_text`` (the gateway's event loop)
    differ only in how they reach PostgreSQL and Redis."""

    def __init__(
        self,
        *,
        user: User,
        conversation_id,
        content,
        type_,
        client_id,
        parent_id,
        metadata,
        known=None,
        online=None,
    ):
        html = "" if type_ == MessageType.ENCRYPTED else rendering.render(content)
        self.user = user
        self.message = Message(
            conversation_id=conversation_id,
            sender=user,
            type=type_,
            content=content,
            html=html,
            client_id=client_id,
            parent_id=parent_id,
            metadata=metadata or {},
            sent_at=timezone.now(),
        )
        self.payload = message_payload(self.message, None, [])
        del self.payload["id"]
        self.params = {
            "conversation": uuid.UUID(str(conversation_id)),
            "sender": user.pk,
            "type": type_,
            "content": content,
            "html": html,
            "parent": parent_id,
            "metadata": json.dumps(self.message.metadata, cls=DjangoJSONEncoder),
            "client_id": client_id,
            "sent_at": self.message.sent_at,
            "payload": json.dumps(self.payload, cls=DjangoJSONEncoder),
        }
        self.rows: list[tuple] = []
        self.recipients: list[tuple] = []
        # Recipients whose presence the caller looked up before the statement (the gateway knows
        # the members from the previous send), and those of them online: marked in the statement.
        self.known: set[str] = set(known or ())
        self.online: set[str] = set(online or ()) & self.known
        self.params["online"] = [uuid.UUID(key) for key in self.online]

    def written(self, rows: list[tuple]) -> bool:
        """Reads the statement's rows: True when the message was written, False for a replay;
        NotFoundError when the sender is not a member."""
        if not any(row[1] == self.user.pk for row in rows):
            raise NotFoundError("Conversation not found.")
        message_id = rows[0][5]
        if message_id is None:
            return False
        self.rows = rows
        self.message.id = self.payload["id"] = message_id
        self.message._state.adding = False
        self.message._state.db = "default"
        # (participant pk, user key, muted, muted_until, level): models only for who is notified.
        self.recipients = [
            (pk, str(user_id), muted, muted_until, level)
            for pk, user_id, muted, muted_until, level, _, _ in rows
            if user_id != self.user.pk
        ]
        return True

    def unknown_keys(self) -> list[str]:
        """Recipients whose presence is still to be looked up (all, without a hint)."""
        return [key for _, key, *_ in self.recipients if key not in self.known]

    def found_online(self, online: set) -> list:
        """Records the presence lookup of ``unknown_keys``; returns the participant ids now
        known to have it delivered (marked by a statement of their own)."""
        self.online |= set(online)
        return [pk for pk, key, *_ in self.recipients if key in online and key not in self.known]

    def member_keys(self) -> list[str]:
        return [str(row[1]) for row in self.rows]

    def offline(self) -> list[Participant]:
        offline = [
            Participant(
                id=pk,
                conversation_id=self.message.conversation_id,
                user_id=uuid.UUID(key),
                muted=muted,
                muted_until=muted_until,
                notification_level=level,
            )
            for pk, key, muted, muted_until, level in self.recipients
            if key not in self.online
        ]
        return [p for p in offline if _wants_notification(p)]

    def events(self) -> list[tuple]:
        event = {"type": "message.created", "data": self.payload}
        return [(user_id, {**event, "seq": seq}) for _, user_id, _, _, _, _, seq in self.rows]


def _send_text(
    *, user: User, conversation_id, content: str, type_: str, client_id: str, parent_id, metadata
) -> Message | None:
    """``message_send`` without attachments: ``_SEND_TEXT``, then what follows a message
    (delivered watermarks, the live events, offline notifications). None for a replay."""
    send = _TextSend(
        user=user,
        conversation_id=conversation_id,
        content=content,
        type_=type_,
        client_id=client_id,
        parent_id=parent_id,
        metadata=metadata,
    )
    with connection.cursor() as cursor:
        cursor.execute(_SEND_TEXT, send.params)
        rows = cursor.fetchall()
    if not send.written(rows):
        return None
    keys = send.unknown_keys()
    delivered = send.found_online(_online(keys))
    if delivered:
        with connection.cursor() as cursor:
            cursor.execute(_MARK_DELIVERED, {"message": send.message.id, "participants": delivered})
    realtime.send_after_commit(send.events())
    _notify_offline_later(send.offline(), send.message.conversation_id)
    return send.message


async def message_send_text(
    *,
    user: User,
    conversation_id,
    content: str,
    client_id: str = "",
    known: list[str] | None = None,
    online: set[str] | None = None,
    publish=None,
) -> tuple[Message, bool, list[tuple], list[Participant], list[str] | None]:
    """A websocket's ``message.send`` of a text message, on the event loop (``communication.adb``
    and Redis' asyncio client; no thread hand-offs). Same rules and effects as
    ``message_send``, except that ``await publish(events)`` sends the events
    (``[(user_pk, event)]``) and the caller schedules the returned offline participants'
    notifications.

    The statement commits without waiting for the disk (``communication.adb``): the events go
    out once it is committed (``MESSAGING_DELIVER_BEFORE_FLUSH``, else once it is on disk), and
    this returns once it is on disk, so an acknowledgement sent after it is one the sender can
    rely on. A crash between the two loses a message its recipients saw and its sender was
    never told about: the sender sends it again (same ``client_id``), and a recipient that
    resumes past the sequence the server still has is asked to resync.

    ``known``: recipients (user pks) whose presence the caller just looked up, ``online`` those
    of them online; their delivered watermark moves in the send's own statement, and only the
    others are looked up after it. Returns ``(message, created, events, offline, members)``,
    ``members`` being every member's user pk (the next send's ``known``); a replay comes back
    as ``(first message, False, [], [], None)``."""
    from asgiref.sync import sync_to_async

    from communication import adb

    content, client_id = _validated(content, MessageType.TEXT, (), client_id)
    send = _TextSend(
        user=user,
        conversation_id=conversation_id,
        content=content,
        type_=MessageType.TEXT,
        client_id=client_id,
        parent_id=None,
        metadata=None,
        known=known,
        online=online,
    )
    if not send.written(await adb.fetchall(_SEND_TEXT, send.params)):
        first = await sync_to_async(_first_send, thread_sensitive=False)(
            user, conversation_id, client_id
        )
        await adb.durable()  # the first send may itself be on its way to the disk
        return first, False, [], [], None
    keys = send.unknown_keys()
    delivered = send.found_online(await _aonline(keys))
    if delivered:
        await adb.fetchall(_MARK_DELIVERED, {"message": send.message.id, "participants": delivered})
    events = send.events()
    if publish is not None and conf.get("MESSAGING_DELIVER_BEFORE_FLUSH"):
        await publish(events)
        await adb.durable()
    else:
        await adb.durable()
        if publish is not None:
            await publish(events)
    return send.message, True, events, send.offline(), send.member_keys()


def _validated(content, type_, attachment_ids, client_id) -> tuple[str, str]:
    content = content or ""
    if len(content) > conf.get("MESSAGING_MAX_CONTENT_LENGTH"):
        raise APIError("The message is too long.", fields={"content": ["Too long."]})
    if type_ not in (MessageType.TEXT, MessageType.ENCRYPTED):
        raise APIError("Type must be text or encrypted.", fields={"type": ["Invalid type."]})
    if not content.strip() and not attachment_ids:
        raise APIError("A message needs content or attachments.", fields={"content": ["Empty."]})
    return content, (client_id or "")[:64]


def _notify_offline_later(offline: list[Participant], conversation_id) -> None:
    """Schedules the offline participants' notifications once the message is committed."""
    if offline:
        transaction.on_commit(lambda: schedule_offline_notifications(offline, conversation_id))


def _online(keys: list[str]) -> set:
    """Who of ``keys`` has a socket open. The message is already stored when this is asked:
    without Redis, everyone counts as offline (notified later) rather than the send failing."""
    try:
        return presence.online(keys) if keys else set()
    except RedisError:
        logger.warning("presence unavailable", exc_info=True)
        return set()


async def _aonline(keys: list[str]) -> set:
    try:
        return await presence.aonline(keys) if keys else set()
    except RedisError:
        logger.warning("presence unavailable", exc_info=True)
        return set()


def _wants_notification(p: Participant) -> bool:
    if p.notification_level == NotificationLevel.NONE:
        return False
    if p.muted and (p.muted_until is None or p.muted_until > timezone.now()):
        return False
    return True


def schedule_offline_notifications(participants: list[Participant], conversation_id) -> None:
    """The first message of a burst to an offline participant schedules one task, after
    ``MESSAGING_NOTIFY_DELAY_SECONDS``; later messages of the burst find the claim taken and
    are covered by that task (which notifies once for everything unread)."""
    from communication.celery import queue
    from messaging.tasks import notify_offline

    delay = conf.get("MESSAGING_NOTIFY_DELAY_SECONDS")
    for p in participants:
        try:
            if not presence.notify_claim(p.user_id, conversation_id, delay):
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
    content, client_id = _validated(content, type, attachment_ids, client_id)
    if not attachment_ids:
        if parent_id is not None:
            parent_id = _thread_root(conversation_id, parent_id)
        message = _send_text(
            user=user,
            conversation_id=conversation_id,
            content=content,
            type_=type,
            client_id=client_id,
            parent_id=parent_id,
            metadata=metadata,
        )
        if message is None:
            return _first_send(user, conversation_id, client_id), False
        return message, True
    with transaction.atomic():
        _me, members = _members_locked(user, conversation_id)
        if client_id:
            # A replay answers with the first message before its attachments (since sent) and
            # parent are checked again. Under the conversation lock no other send of this id can
            # be in flight.
            first = _first_send(user, conversation_id, client_id)
            if first is not None:
                return first, False
        if parent_id is not None:
            parent_id = _thread_root(conversation_id, parent_id)
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
        if type == MessageType.TEXT and not content.strip():
            type = MessageType.ATTACHMENT
        message = _store_message(
            conversation_id=conversation_id,
            sender=user,
            content=content,
            type_=type,
            client_id=client_id,
            parent_id=parent_id,
            metadata=metadata,
            attached=attached,
            members=members,
        )
        if message is None:
            return _first_send(user, conversation_id, client_id), False
    return message, True


def _thread_root(conversation_id, parent_id: int) -> int:
    """The thread a reply to ``parent_id`` joins (threads are one level deep)."""
    parent = (
        Message.objects.filter(id=parent_id, conversation_id=conversation_id)
        .values_list("parent_id", "id")
        .first()
    )
    if parent is None:
        raise APIError(
            "The parent message is not in this conversation.",
            code="invalid_parent",
            fields={"parent_id": ["Unknown message."]},
        )
    return parent[0] or parent[1]


def _first_send(user: User, conversation_id, client_id: str) -> Message | None:
    return (
        Message.objects.filter(conversation_id=conversation_id, sender=user, client_id=client_id)
        .select_related("sender")
        .first()
    )


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
    with connection.cursor() as cursor:  # every socket's connect and close: one statement
        cursor.execute(
            "INSERT INTO messaging_userpresence (user_id, last_seen_at) VALUES (%s, %s) "
            "ON CONFLICT (user_id) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at",
            [user_pk, when],
        )
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
