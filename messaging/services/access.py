"""What every write to a conversation starts with: who may do it, and the locks it takes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from communication import realtime
from communication.exceptions import APIError, CommunicationNotAllowedError, NotFoundError
from communication.models import User
from communication.organizations import may_contact, organization_policy
from messaging import selectors
from messaging.models import ACTIVE_MEMBER, Conversation, Message, Participant, Role


class PermissionDeniedError(APIError):
    status_code = 403
    default_code = "permission_denied"
    default_detail = "You may not do this."


MANAGER_ROLES = (Role.OWNER, Role.ADMIN, Role.AGENT)


# ------------------------------------------------------------- the organizations' policy
# Creating contact is checked (a new conversation, an added member); what exists already (a
# direct pair, a conversation whose members have since become out of scope) is history and
# stays usable.


def contact_check(user: User, others: Iterable[User]) -> None:
    """Refuses (403 ``communication_not_allowed``) when the policy of ``user``'s organization
    does not let them contact one of ``others``; ``detail`` names the rule."""
    for other in others:
        allowed, rule = may_contact(user, other)
        if not allowed:
            raise CommunicationNotAllowedError(
                f"{rule}: your organization's policy does not let you contact "
                f"{other.external_id or other.username}."
            )


def group_create_check(user: User) -> None:
    """Refuses a group conversation by someone whose roles are outside the ``group_create_roles``
    of their organization (empty or no organization: everyone may)."""
    policy = organization_policy(user.organization or None)
    if not policy.allows_group_create(user.roles or []):
        raise CommunicationNotAllowedError(
            "group_create_roles: your organization lets only "
            f"{', '.join(policy.group_create_roles)} create group conversations."
        )


def member_locked(user: User, conversation_id: uuid.UUID | str) -> Participant:
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
    if conversation is None:
        raise NotFoundError("Conversation not found.")
    participant = Participant.objects.filter(
        ACTIVE_MEMBER, user=user, conversation_id=conversation_id
    ).first()
    if participant is None:
        raise NotFoundError("Conversation not found.")
    participant.conversation = conversation
    return participant


def message_locked(user: User, message_id: int) -> Message:
    """A message the caller can see (a member of its conversation), locked."""
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("sender", "conversation")
        .filter(id=message_id)
        .first()
    )
    if message is None or not selectors.is_member(user.pk, message.conversation_id):
        raise NotFoundError("Message not found.")
    return message


def publish_to_members(
    participants: Iterable[Participant], type_: str, data: Mapping[str, object]
) -> None:
    """One event to every one of ``participants`` (their sequence rows are taken in user order
    by ``communication.realtime``, so concurrent fan-outs cannot deadlock)."""
    realtime.publish_events(type_, {p.user_id: data for p in participants})
