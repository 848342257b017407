"""Reads shared by the API, the gateway handlers, the admin and tasks."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from django.contrib.postgres.expressions import ArraySubquery
from django.db import connection
from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, NullIf

from communication.exceptions import NotFoundError
from communication.models import User
from communication.org_models import Organization
from communication.organizations import lineage, organizations_within
from messaging.models import (
    ACTIVE_MEMBER,
    NAMED_MEMBERS,
    Attachment,
    Conversation,
    Message,
    MessageEdit,
    Participant,
    UserPresence,
)


def participant_get(*, user: User, conversation_id: uuid.UUID | str) -> Participant:
    """The caller's active membership, or 404 (a conversation one is not in does not exist)."""
    participant = (
        Participant.objects.select_related("conversation")
        .filter(user=user, conversation_id=conversation_id, left_at__isnull=True)
        .first()
    )
    if participant is None:
        raise NotFoundError("Conversation not found.")
    return participant


def is_member(user_pk: uuid.UUID | str, conversation_id: uuid.UUID | str) -> bool:
    return Participant.objects.filter(
        user_id=user_pk, conversation_id=conversation_id, left_at__isnull=True
    ).exists()


def active_participants(conversation_id: uuid.UUID | str) -> QuerySet[Participant]:
    return Participant.objects.filter(
        conversation_id=conversation_id, left_at__isnull=True
    ).select_related("user")


def member_pks(conversation_id: uuid.UUID | str) -> list[uuid.UUID]:
    return list(
        Participant.objects.filter(
            conversation_id=conversation_id, left_at__isnull=True
        ).values_list("user_id", flat=True)
    )


def contacts_of(user_pk: uuid.UUID | str) -> list[uuid.UUID]:
    """Users sharing an active conversation with ``user_pk`` (who is told of their presence).

    Runs on every socket's connect and close, hence written out."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT other.user_id FROM messaging_participant mine "
            "JOIN messaging_participant other ON other.conversation_id = mine.conversation_id "
            "WHERE mine.user_id = %s AND mine.left_at IS NULL AND other.left_at IS NULL "
            "AND other.user_id <> %s",
            [user_pk, user_pk],
        )
        return [row[0] for row in cursor.fetchall()]


def contacts_last_seen(
    user_pk: uuid.UUID | str, external_ids: Iterable[str]
) -> list[tuple[str, str | None, dt.datetime | None]]:
    """``(user pk, external id, last seen)`` of those of ``external_ids`` who are contacts of
    ``user_pk`` (a socket may ask only about them)."""
    contacts = {str(pk) for pk in contacts_of(user_pk)}
    users = [u for u in User.objects.filter(external_id__in=external_ids) if str(u.pk) in contacts]
    seen = dict(UserPresence.objects.filter(user__in=users).values_list("user_id", "last_seen_at"))
    return [(str(u.pk), u.external_id, seen.get(u.pk)) for u in users]


def _unread_subquery(user: User) -> Subquery:
    return Subquery(
        Message.objects.filter(
            conversation_id=OuterRef("conversation_id"),
            id__gt=Coalesce(OuterRef("last_read_message_id"), Value(0)),
            deleted_at__isnull=True,
        )
        .exclude(sender=user)
        .order_by()
        .values("conversation_id")
        .annotate(n=Count("id"))
        .values("n")[:1]
    )


def conversation_list(*, user: User) -> QuerySet[Participant]:
    """The caller's memberships, newest activity first, each with its conversation, last message,
    active participants and ``unread``: a fixed number of queries whatever the count."""
    return (
        Participant.objects.filter(user=user, left_at__isnull=True)
        .select_related(
            "conversation__created_by",
            "conversation__assigned_agent",
            "conversation__last_message__sender",
        )
        .prefetch_related(
            Prefetch(
                "conversation__participants",
                queryset=Participant.objects.filter(left_at__isnull=True)
                .select_related("user")
                .order_by("joined_at", "id"),
                to_attr="active_participants",
            )
        )
        .annotate(
            unread=Coalesce(_unread_subquery(user), Value(0)),
            activity=F("conversation__last_activity_at"),
        )
    )


def conversation_get(*, user: User, conversation_id: uuid.UUID | str) -> Participant:
    participant = conversation_list(user=user).filter(conversation_id=conversation_id).first()
    if participant is None:
        raise NotFoundError("Conversation not found.")
    return participant


def message_list(
    *,
    conversation_id: uuid.UUID | str,
    before: int | None = None,
    after: int | None = None,
    thread: int | None = None,
    limit: int = 50,
) -> tuple[list[Message], bool]:
    """A page of messages in id order and whether more lie beyond it (older without ``after``,
    newer with it). ``thread`` lists the replies to that message."""
    qs = (
        Message.objects.filter(conversation_id=conversation_id)
        .select_related("sender")
        .prefetch_related(
            Prefetch("attachments", queryset=Attachment.objects.order_by("created_at", "id"))
        )
    )
    if thread is not None:
        qs = qs.filter(parent_id=thread)
    return _page(qs, before=before, after=after, limit=limit)


def _page(
    qs: QuerySet[Message], *, before: int | None, after: int | None, limit: int
) -> tuple[list[Message], bool]:
    """``limit`` messages of ``qs`` in id order (the newest, or the oldest after ``after``) and
    whether more lie beyond them; ids are what the (conversation, id) index serves."""
    if before is not None:
        qs = qs.filter(id__lt=before)
    if after is not None:
        qs = qs.filter(id__gt=after).order_by("id")
    else:
        qs = qs.order_by("-id")
    rows = list(qs[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    if after is None:
        rows.reverse()
    return rows, more


def message_get(*, user: User, message_id: int) -> Message:
    """A message in a conversation the caller belongs to, or 404."""
    message = (
        Message.objects.select_related("sender", "conversation")
        .filter(
            id=message_id,
            conversation__participants__user=user,
            conversation__participants__left_at__isnull=True,
        )
        .first()
    )
    if message is None:
        raise NotFoundError("Message not found.")
    return message


def attachment_visible_to(attachment: Attachment, user_pk: uuid.UUID | str) -> bool:
    """The uploader sees an attachment until it is sent; then the conversation's members do."""
    message = attachment.message
    if message is None:
        return str(attachment.uploader_id) == str(user_pk)
    if message.deleted_at is not None:
        return False
    return Participant.objects.filter(
        conversation_id=message.conversation_id,
        user_id=user_pk,
        left_at__isnull=True,
    ).exists()


# ------------------------------------------------------------------------------- staff console


def _member_names(conversation_id: OuterRef) -> ArraySubquery:
    """The first few active members' names of a conversation (one more than a name shows, so
    that it can say there are others): a subquery evaluated for the rows a page returns, not a
    join and grouping over the whole table."""
    return ArraySubquery(
        Participant.objects.filter(ACTIVE_MEMBER, conversation_id=conversation_id)
        .order_by("joined_at", "id")
        .values_list(
            Coalesce(NullIf("user__name", Value("")), "user__external_id", "user__username"),
            flat=True,
        )[: NAMED_MEMBERS + 1]
    )


def conversation_staff_list() -> QuerySet[Conversation]:
    """Every conversation, for staff: with its agent, creator, last message and its sender, and
    ``participant_names`` (what ``str()`` calls a conversation without a title)."""
    return Conversation.objects.select_related(
        "assigned_agent", "created_by", "last_message__sender"
    ).annotate(participant_names=_member_names(OuterRef("pk")))


def message_staff_list() -> QuerySet[Message]:
    """Every message, for staff: with its sender, conversation, the message it replies to, and
    ``conversation_names``, its conversation's ``participant_names``."""
    return Message.objects.select_related("sender", "conversation", "parent__sender").annotate(
        conversation_names=_member_names(OuterRef("conversation_id"))
    )


def message_transcript(
    *, conversation_id: uuid.UUID | str, before: int | None = None, limit: int = 200
) -> tuple[list[Message], bool]:
    """The newest ``limit`` messages of a conversation (before the id ``before``), oldest first,
    and whether there are earlier ones: for staff reading it, each with its sender, the message
    it replies to, its attachments and its edit trail, in a fixed number of queries."""
    qs = (
        Message.objects.filter(conversation_id=conversation_id)
        .select_related("sender", "parent__sender")
        .prefetch_related(
            Prefetch("attachments", queryset=Attachment.objects.order_by("created_at", "id")),
            Prefetch(
                "edits",
                queryset=MessageEdit.objects.select_related("edited_by").order_by(
                    "edited_at", "id"
                ),
            ),
        )
    )
    return _page(qs, before=before, after=None, limit=limit)


def participant_roles(
    *, conversation_id: uuid.UUID | str, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The role in a conversation of each of ``user_ids`` who is or was a member of it."""
    return dict(
        Participant.objects.filter(
            conversation_id=conversation_id, user_id__in=list(user_ids)
        ).values_list("user_id", "role")
    )


def support_agent_list() -> QuerySet[User]:
    """The users support conversations can be assigned to (the ``support_agent`` role)."""
    return User.objects.filter(roles__contains=["support_agent"]).order_by("name", "username")


def support_agents_for(requester: User) -> QuerySet[User]:
    """The agents a support conversation of ``requester`` routes to: the support agents of the
    requester's organization or, when it has none, of its nearest ancestor that has any. Two
    queries: the requester's lineage, then the agents (the nearest organization with any is a
    subquery of the same statement).

    With no organization known at all every agent serves everyone (one organization). A
    requester without an organization, or with one not known locally, is an organization of
    their own (as for ``may_contact``): its agents are those with the same organization.
    """
    agents = support_agent_list()
    org = requester.organization or ""
    chain = [o.id for o in lineage(org)] if org else []
    if not chain:
        if not Organization.objects.exists():
            return agents
        return agents.filter(organization=org)
    # The deeper in the lineage, the nearer: rank each candidate's organization by its depth.
    depth = Case(
        *(When(organization=org_id, then=Value(i)) for i, org_id in enumerate(chain)),
        output_field=IntegerField(),
    )
    nearest = (
        User.objects.filter(roles__contains=["support_agent"], organization__in=chain)
        .annotate(depth=depth)
        .order_by("-depth")
        .values("organization")[:1]
    )
    return agents.filter(organization=Subquery(nearest))


def support_agent_serves(agent: User, requester: User) -> bool:
    """Whether ``agent`` may see and be assigned a support conversation of ``requester``: the
    requester's organization is the agent's or under it (one query). Agents and requesters
    without an organization, or with one not known locally, serve and are served by the same
    organization only; with no organization known at all, every agent serves everyone."""
    a_org, r_org = agent.organization or "", requester.organization or ""
    if a_org == r_org:
        return True
    if not a_org or not r_org:
        return not Organization.objects.exists()
    within = organizations_within(a_org).filter(id=r_org).exists()
    return within or not Organization.objects.exists()


def attachment_sent_get(attachment_id: uuid.UUID | str) -> Attachment | None:
    """A sent attachment (one a message carries) with its message and conversation; None for
    an unknown one or an upload not sent yet (only its uploader may see that)."""
    return (
        Attachment.objects.select_related("message__conversation")
        .filter(id=attachment_id, message__isnull=False)
        .first()
    )
