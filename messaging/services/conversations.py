"""Creating conversations and changing their settings."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from communication import identity, realtime
from communication.audit import actor_of, audit_record, field_changes
from communication.exceptions import APIError, ServiceUnavailableError
from communication.models import User
from communication.services import user_resolve
from messaging import conf, selectors
from messaging.models import DIRECT_PAIR, Conversation, ConversationType, Participant, Role
from messaging.services.access import (
    MANAGER_ROLES,
    PermissionDeniedError,
    contact_check,
    group_create_check,
    member_locked,
    publish_to_members,
)
from messaging.services.payloads import conversation_payload


def resolve(external_id: str) -> User:
    """The local user for an identity-service id; 400 when unknown, 503 when unreachable."""
    try:
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


def direct_key(a: User, b: User, encrypted: bool = False) -> str:
    """The pair's key; an encrypted direct conversation is a second one beside the plain one
    (the pair may have both: the plain one keeps its history readable by the server, search and
    previews, which the encrypted one gives up)."""
    pair = ":".join(sorted([str(a.pk), str(b.pk)]))
    return f"{pair}:e2e" if encrypted else pair


def conversation_create(
    *,
    user: User,
    type: str,
    participants: list[str],
    title: str = "",
    metadata: dict[str, Any] | None = None,
    encrypted: bool = False,
) -> tuple[Conversation, bool]:
    """Creates a conversation; returns it and whether it is new.

    A direct conversation exists once per pair of users and ``encrypted``: a second create (by
    either of them) returns the first, and the caller rejoins it if they had left.
    ``encrypted`` (end-to-end: messages are envelopes, ``messaging.services.e2e``) is fixed
    here for the conversation's life.

    The organizations' policy decides a new conversation (403 ``communication_not_allowed``,
    nothing created): whom the caller may contact and, for a group, whether their roles may
    create one. An existing direct pair is returned whatever the policy says now.
    """
    others: list[User] = []
    for external_id in dict.fromkeys(participants):
        if external_id == user.external_id:
            continue
        others.append(resolve(external_id))
    if len(others) + 1 > conf.get("MESSAGING_MAX_PARTICIPANTS"):
        raise APIError("Too many participants.", fields={"participants": ["Too many."]})
    if type == ConversationType.DIRECT:
        if len(others) != 1:
            raise APIError(
                "A direct conversation has exactly one other participant.",
                fields={"participants": ["Give exactly one other user."]},
            )
        key = direct_key(user, others[0], encrypted)
        # The row the constraint keeps unique: the same condition, not a copy of it.
        pair = Conversation.objects.filter(DIRECT_PAIR, direct_key=key)
        existing = pair.first()
        if existing is not None:
            _rejoin_direct(existing, user)
            return existing, False
        contact_check(user, others)
        try:
            with transaction.atomic():
                return (
                    _create(user, type, others, title, metadata, encrypted, direct_key=key),
                    True,
                )
        except IntegrityError:
            # Both users created it at the same moment: the other transaction won.
            existing = pair.get()
            _rejoin_direct(existing, user)
            return existing, False
    if type == ConversationType.SUPPORT and others:
        raise APIError(
            "A support conversation starts with its requester only; agents are assigned.",
            fields={"participants": ["Leave empty for support conversations."]},
        )
    if type == ConversationType.GROUP:
        group_create_check(user)
        contact_check(user, others)
    with transaction.atomic():
        conversation = _create(user, type, others, title, metadata, encrypted)
        if type == ConversationType.SUPPORT:
            _route_support(conversation, user)
        return conversation, True


def _route_support(conversation: Conversation, requester: User) -> None:
    """Tells the agents a new support conversation routes to (``selectors.support_agents_for``:
    the requester's organization, or its nearest ancestor with agents) that it waits for one."""
    agents = list(selectors.support_agents_for(requester))
    if not agents:
        return
    payload = conversation_payload(
        conversation, list(selectors.active_participants(conversation.id))
    )
    event = {
        "conversation_id": str(conversation.id),
        "requester": requester.external_id,
        "conversation": payload,
    }
    realtime.publish_events("support.waiting", dict.fromkeys((a.pk for a in agents), event))


@transaction.atomic
def _rejoin_direct(conversation: Conversation, user: User) -> None:
    rejoined = Participant.objects.filter(
        conversation=conversation, user=user, left_at__isnull=False
    ).update(left_at=None, joined_at=timezone.now())
    if rejoined:
        audit_record(
            "conversation.rejoin",
            "messaging.conversation",
            conversation.pk,
            changes={"user": user.external_id},
            actor=actor_of(user),
        )


def _create(
    user: User,
    type_: str,
    others: list[User],
    title: str,
    metadata: dict[str, Any] | None,
    encrypted: bool,
    direct_key: str | None = None,
) -> Conversation:
    conversation = Conversation.objects.create(
        type=type_,
        encrypted=encrypted,
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
    # Members by their ids; the title and metadata by name only (free text).
    audit_record(
        "conversation.create",
        "messaging.conversation",
        conversation.pk,
        changes={
            "type": type_,
            **({"encrypted": True} if encrypted else {}),
            "participants": [row.user.external_id for row in rows],
            **({"title": "changed"} if title else {}),
            **({"metadata": "changed"} if metadata else {}),
        },
        actor=actor_of(user),
    )
    payload = conversation_payload(conversation, rows)
    realtime.publish_events(
        "participant.added",
        {
            row.user_id: {
                "conversation_id": str(conversation.id),
                "user_id": row.user.external_id,
                "role": row.role,
                "by": user.external_id,
                "conversation": payload,
            }
            for row in rows
            if row.user_id != user.pk
        },
    )
    return conversation


def conversation_update(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Conversation:
    """Renames a conversation or replaces its metadata (owner/admin of a group or support
    conversation; either participant of a direct one)."""
    with transaction.atomic():
        me = member_locked(user, conversation_id)
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
            audit_record(
                "conversation.update",
                "messaging.conversation",
                conversation.pk,
                changes=dict.fromkeys(fields, "changed"),
                actor=actor_of(user),
            )
            members = list(selectors.active_participants(conversation.id))
            publish_to_members(
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


def conversation_mute(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    muted: bool = True,
    until: dt.datetime | None = None,
) -> Participant:
    """Mutes offline notifications for the caller, until ``until`` (None: until unmuted)."""
    me = selectors.participant_get(user=user, conversation_id=conversation_id)
    before = {"muted": me.muted, "muted_until": me.muted_until}
    me.muted = muted
    me.muted_until = until if muted else None
    with transaction.atomic():
        me.save(update_fields=["muted", "muted_until"])
        audit_record(
            "conversation.mute" if muted else "conversation.unmute",
            "messaging.participant",
            me.pk,
            changes=field_changes(before, {"muted": me.muted, "muted_until": me.muted_until}),
            actor=actor_of(user),
        )
    return me
