"""Who is in a conversation: adding, removing, leaving, and support agents' assignment. Each
change is also recorded as a system message."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from communication.audit import actor_of, audit_record
from communication.exceptions import (
    APIError,
    CommunicationNotAllowedError,
    ConflictError,
    NotFoundError,
)
from communication.models import User
from messaging import selectors
from messaging.models import ACTIVE_MEMBER, Conversation, ConversationType, Participant, Role
from messaging.services.access import (
    MANAGER_ROLES,
    PermissionDeniedError,
    contact_check,
    member_locked,
    publish_to_members,
)
from messaging.services.conversations import resolve
from messaging.services.payloads import conversation_payload, display_name, external_id
from messaging.services.send import system_message_send


def participant_add(
    *, user: User, conversation_id: uuid.UUID | str, user_id: str, role: str = Role.MEMBER
) -> tuple[Participant, bool]:
    """Adds ``user_id`` (an owner's or admin's act); a system message records it. The caller
    must be allowed to contact them (the organizations' policy: 403 ``communication_not_allowed``)
    and an agent must serve the requester of a support conversation.

    Returns the membership and whether it is new (an active member is returned as is)."""
    if role not in (Role.MEMBER, Role.ADMIN, Role.AGENT):
        raise APIError("Role must be member, admin or agent.", fields={"role": ["Invalid role."]})
    target = resolve(user_id)
    if role == Role.AGENT and "support_agent" not in target.roles:
        raise APIError(
            "Only support agents can take the agent role.", fields={"role": ["Not an agent."]}
        )
    with transaction.atomic():
        me = member_locked(user, conversation_id)
        conversation = me.conversation
        if conversation.type == ConversationType.DIRECT:
            raise ConflictError("A direct conversation has exactly two participants.")
        if me.role not in MANAGER_ROLES:
            raise PermissionDeniedError("Only an owner or admin may add participants.")
        contact_check(user, [target])
        if role == Role.AGENT and conversation.type == ConversationType.SUPPORT:
            _serves_check(target, conversation)
        return _add(conversation, target, role, actor=user)


def _serves_check(agent: User, conversation: Conversation) -> None:
    """Refuses an agent outside the organization of a support conversation's requester."""
    requester = conversation.created_by
    if requester is not None and not selectors.support_agent_serves(agent, requester):
        raise CommunicationNotAllowedError(
            f"support_routing: {agent} does not serve the organization of this conversation's "
            "requester."
        )


def _add(
    conversation: Conversation, target: User, role: str, *, actor: User
) -> tuple[Participant, bool]:
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
    audit_record(
        "participant.add",
        "messaging.participant",
        participant.pk,
        changes={
            "conversation": str(conversation.pk),
            "user": target.external_id,
            "role": role,
        },
        actor=actor_of(actor),
    )
    members = list(selectors.active_participants(conversation.id))
    publish_to_members(
        members,
        "participant.added",
        {
            "conversation_id": str(conversation.id),
            "user_id": target.external_id,
            "role": role,
            "by": external_id(actor),
            "conversation": conversation_payload(conversation, members),
        },
    )
    system_message_send(
        conversation.pk,
        actor,
        f"{display_name(actor)} added {display_name(target)}",
        event="participant.added",
        user_id=target.external_id,
        role=role,
    )
    return participant, True


def participant_remove(*, user: User, conversation_id: uuid.UUID | str, user_id: str) -> None:
    """Removes ``user_id`` (owner/admin), or the caller themselves (leaving)."""
    _participant_remove(user, conversation_id, None if user_id == user.external_id else user_id)


def _participant_remove(user: User, conversation_id: uuid.UUID | str, user_id: str | None) -> None:
    """Removes ``user_id``, or the caller (None): a staff account without an external id can
    leave too."""
    with transaction.atomic():
        me = member_locked(user, conversation_id)
        conversation = me.conversation
        target_row: Participant | None
        if user_id is None:
            target_row = me
        else:
            if me.role not in MANAGER_ROLES:
                raise PermissionDeniedError("Only an owner or admin may remove participants.")
            target_row = (
                Participant.objects.select_for_update()
                .select_related("user")
                .filter(ACTIVE_MEMBER, conversation=conversation, user__external_id=user_id)
                .first()
            )
            if target_row is None:
                raise NotFoundError("Participant not found.")
            if target_row.role == Role.OWNER and me.role != Role.OWNER:
                raise PermissionDeniedError("Only an owner may remove an owner.")
        _remove(conversation, target_row, actor=user)


def _remove(conversation: Conversation, row: Participant, *, actor: User) -> None:
    members = list(selectors.active_participants(conversation.id))
    row.left_at = timezone.now()
    row.save(update_fields=["left_at"])
    audit_record(
        "participant.leave" if row.user_id == actor.pk else "participant.remove",
        "messaging.participant",
        row.pk,
        changes={"conversation": str(conversation.pk), "user": row.user.external_id},
        actor=actor_of(actor),
    )
    if conversation.assigned_agent_id == row.user_id:
        conversation.assigned_agent = None
        conversation.save(update_fields=["assigned_agent", "updated_at"])
    publish_to_members(
        members,
        "participant.removed",
        {
            "conversation_id": str(conversation.id),
            "user_id": row.user.external_id,
            "by": external_id(actor),
        },
    )
    leaving = row.user_id == actor.pk
    text = (
        f"{display_name(actor)} left"
        if leaving
        else f"{display_name(actor)} removed {display_name(row.user)}"
    )
    system_message_send(
        conversation.pk, actor, text, event="participant.removed", user_id=row.user.external_id
    )


def conversation_leave(*, user: User, conversation_id: uuid.UUID | str) -> None:
    _participant_remove(user, conversation_id, None)


def support_assign(*, conversation: Conversation, agent: User, by: User | None = None) -> None:
    """Assigns a support conversation to ``agent`` (a user with the ``support_agent`` role), who
    joins it with the role ``agent``; a previous agent leaves. An agent whose organization is
    not the requester's or above it is refused (403 ``communication_not_allowed``): an agent
    sees only the support conversations of the organizations under theirs."""
    if conversation.type != ConversationType.SUPPORT:
        raise APIError("Only support conversations are assigned to agents.")
    if "support_agent" not in (agent.roles or []):
        raise APIError(f"{agent} is not a support agent.", fields={"agent": ["Not an agent."]})
    with transaction.atomic():
        conversation = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("created_by")
            .get(pk=conversation.pk)
        )
        _serves_check(agent, conversation)
        previous = conversation.assigned_agent_id
        if previous == agent.pk:
            return
        if previous is not None:
            row = (
                Participant.objects.select_related("user")
                .filter(ACTIVE_MEMBER, conversation=conversation, user_id=previous)
                .first()
            )
            if row is not None:
                _remove(conversation, row, actor=by or row.user)
        conversation.assigned_agent = agent
        conversation.save(update_fields=["assigned_agent", "updated_at"])
        _add(conversation, agent, Role.AGENT, actor=by or agent)
