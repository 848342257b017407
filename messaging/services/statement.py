"""The one statement that writes a message, whatever its kind, and ``MessageWrite``, which
prepares its parameters and reads its rows. ``messaging.services.send`` runs it from a thread
(Django's connection) or from the event loop (``communication.adb``): the SQL, its parameters
and the reading of its answer are the same for both.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Model, Q
from django.db.models.sql import Query
from django.utils import timezone

from communication import realtime
from communication.exceptions import APIError, NotFoundError
from communication.fields import EncryptedField
from communication.models import User
from messaging import rendering
from messaging.models import (
    ACTIVE_MEMBER,
    CLIENT_ID_SET,
    Attachment,
    Message,
    MessageType,
    Participant,
)
from messaging.services.offline import wants_notification
from messaging.services.payloads import AttachmentPayload, attachment_payload, message_payload
from notifications.services import webhooks

# The encrypted columns the statement writes and a replay reads back, converted by the fields.
_CONTENT = cast(EncryptedField, Message._meta.get_field("content"))
_HTML = cast(EncryptedField, Message._meta.get_field("html"))
_METADATA = cast(EncryptedField, Message._meta.get_field("metadata"))

# A row as the database driver returns it.
Row = tuple[Any, ...]
# ``(user pk, event)``: an event for one user, as ``communication.realtime`` sends it.
Event = tuple[uuid.UUID, dict[str, object]]


class Recipient(NamedTuple):
    """A member other than the sender, as the statement returns them: who may be notified."""

    participant_pk: int
    key: str  # the user pk, as text
    muted: bool
    muted_until: dt.datetime | None
    level: str


def _condition_sql(model: type[Model], condition: Q) -> str:
    """``condition`` compiled as a constraint of ``model`` compiles it (unqualified columns,
    values inlined): raw SQL that must name the same rows as a partial index (``ON CONFLICT …
    WHERE``) takes the index's own expression object."""
    query = Query(model=model, alias_cols=False)
    sql, params = query.build_where(condition).as_sql(
        query.get_compiler(connection=connection), connection
    )
    quote = connection.schema_editor().quote_value
    return sql % tuple(quote(p) for p in params)


# One statement writes a message, whatever its kind: lock the conversation, check the sender is
# a member (not for system messages, whose actor may just have left or be staff), find a replay
# of ``client_id``, the thread root of a reply and the sender's unsent attachments (locked),
# insert the message when all of that holds (a concurrent replay inserts nothing), attach the
# attachments, move the conversation's activity, the sender's watermarks and the delivered
# watermark of the recipients the caller knows to be online, and persist every member's
# ``message.created`` event with its ``seq`` (``communication.realtime``). Its answer is one
# row per active member (one row of NULLs when there are none), each carrying the message's id
# and thread root, or the replayed message, and whether the checks passed. One statement is
# atomic on its own: no BEGIN/COMMIT round trips and no lock held between round trips. The
# member list is the statement's snapshot, taken before the conversation lock is granted: a
# participant added while this send waited on it misses the live event (the message is in their
# history).
WRITE = """
WITH conversation AS (
    SELECT id FROM messaging_conversation WHERE id = %(conversation)s FOR UPDATE
), members AS (
    SELECT p.id, p.user_id, p.muted, p.muted_until, p.notification_level
    FROM messaging_participant p JOIN conversation c ON c.id = p.conversation_id
    WHERE {active}
), existing AS (
    SELECT id, type, content, html, parent_id, metadata, sent_at, edited_at, deleted_at
    FROM messaging_message
    WHERE conversation_id = %(conversation)s AND sender_id = %(sender)s
        AND client_id = %(client_id)s AND {client_id_set}
), parent AS (
    SELECT coalesce(parent_id, id) AS id FROM messaging_message
    WHERE id = %(parent)s::bigint AND conversation_id = %(conversation)s
), attached AS (
    SELECT id FROM messaging_attachment
    WHERE id = ANY(%(attachments)s::uuid[]) AND uploader_id = %(sender)s AND message_id IS NULL
    FOR UPDATE
), checks AS (
    SELECT (%(parent)s::bigint IS NULL OR EXISTS (SELECT 1 FROM parent)) AS parent_ok,
        (SELECT count(*) FROM attached) = cardinality(%(attachments)s::uuid[]) AS attached_ok
), message AS (
    INSERT INTO messaging_message
        (conversation_id, sender_id, type, content, html, parent_id, metadata, client_id, sent_at)
    SELECT %(conversation)s, %(sender)s, %(type)s, %(content)s, %(html)s, (SELECT id FROM parent),
        %(metadata)s, %(client_id)s, %(sent_at)s
    FROM checks
    WHERE EXISTS (SELECT 1 FROM conversation)
        AND (%(system)s OR EXISTS (SELECT 1 FROM members WHERE user_id = %(sender)s))
        AND NOT EXISTS (SELECT 1 FROM existing) AND checks.parent_ok AND checks.attached_ok
    ON CONFLICT (conversation_id, sender_id, client_id) WHERE {client_id_set} DO NOTHING
    RETURNING id, parent_id
), attach AS (
    UPDATE messaging_attachment a SET message_id = message.id
    FROM message WHERE a.id IN (SELECT id FROM attached)
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
), recipients AS (
    SELECT members.user_id, jsonb_build_object(
        'id', message.id, 'parent_id', message.parent_id,
        'attachments', coalesce(%(attachment_payloads)s::jsonb -> members.user_id::text, '[]')
    ) AS data, %(sealed)s::bytea AS sealed
    FROM members, message
), {webhooks}, {events}
SELECT m.id, m.user_id, m.muted, m.muted_until, m.notification_level, e.seq,
    (SELECT id FROM message), (SELECT parent_id FROM message),
    x.id, x.type, x.content, x.html, x.parent_id, x.metadata, x.sent_at, x.edited_at,
    x.deleted_at, checks.parent_ok, checks.attached_ok, (SELECT count(*) FROM webhooks)
FROM checks LEFT JOIN existing x ON true
    LEFT JOIN (members m LEFT JOIN events e ON e.user_id = m.user_id) ON true
"""


@functools.cache
def write_sql() -> str:
    # Built once (after the apps are loaded): the gateway's pool prepares it by its text.
    return WRITE.format(
        active=_condition_sql(Participant, ACTIVE_MEMBER),
        client_id_set=_condition_sql(Message, CLIENT_ID_SET),
        events=realtime.sequence_events_sql(source="recipients", type_sql="'message.created'"),
        webhooks=webhooks.EMIT_MESSAGE_SQL,
    )


# Recipients found online after the statement have the message delivered (its event is on the
# way). Outside the send's statement, so only ever forward.
MARK_DELIVERED = (
    "UPDATE messaging_participant SET last_delivered_message_id = %(message)s "
    "WHERE id = ANY(%(participants)s) AND (last_delivered_message_id IS NULL "
    "OR last_delivered_message_id < %(message)s)"
)

# A replay whose first send committed while this one's statement waited for the conversation
# lock: its snapshot did not show it, its ON CONFLICT did.
FIRST_SEND = (
    "SELECT id, type, content, html, parent_id, metadata, sent_at, edited_at, deleted_at "
    "FROM messaging_message WHERE conversation_id = %(conversation)s AND sender_id = %(sender)s "
    "AND client_id = %(client_id)s"
)


# The largest message id (a bigint): PostgreSQL refuses a larger one in ``::bigint``.
MAX_MESSAGE_ID = 2**63 - 1


def _invalid_parent() -> APIError:
    """The one answer for a parent that is not a message of this conversation, whether it is in
    another conversation or nowhere: the answer must not tell which."""
    return APIError(
        "The parent message is not in this conversation.",
        code="invalid_parent",
        fields={"parent_id": ["Unknown message."]},
    )


def invalid_attachment(detail: str = "Unknown or already sent attachment.") -> APIError:
    return APIError(
        detail,
        code="invalid_attachment",
        fields={"attachments": ["Unknown or already sent." if "sent" in detail else "Not an id."]},
    )


class MessageWrite:
    """One message through ``WRITE``: what goes in, and what its rows say."""

    def __init__(
        self,
        *,
        user: User,
        conversation_id: uuid.UUID | str,
        content: str,
        type_: str,
        client_id: str = "",
        parent_id: int | None = None,
        metadata: dict[str, Any] | None = None,
        attachment_ids: Iterable[uuid.UUID] = (),
        system: bool = False,
        known: Iterable[object] | None = None,
        online: Iterable[object] | None = None,
    ) -> None:
        self.user = user
        self.system = system
        self.webhooks_written = 0
        html = "" if type_ == MessageType.ENCRYPTED else rendering.render(content)
        self.attachment_ids = list(dict.fromkeys(attachment_ids))
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
        self.payload: dict[str, object] = dict(message_payload(self.message, None, []))
        for key in ("id", "parent_id", "attachments"):  # the statement's to fill in
            del self.payload[key]
        # {user key: the attachments' payload with links signed for them}, when there are any.
        self.attachment_payloads: dict[str, list[AttachmentPayload]] = {}
        self.params: dict[str, Any] = {
            "conversation": uuid.UUID(str(conversation_id)),
            "sender": user.pk,
            "type": type_,
            # Encrypted as the fields' own conversion does (``communication.fields``); the
            # statement stores the bytes as they are.
            "content": _CONTENT.encrypted(content),
            "html": _HTML.encrypted(html),
            # No message has id 0: a parent past the ids is unknown, as one in another
            # conversation is (the statement's parent check answers both).
            "parent": parent_id if parent_id is None or 0 < parent_id <= MAX_MESSAGE_ID else 0,
            "metadata": _METADATA.encrypted(self.message.metadata),
            "client_id": client_id,
            "sent_at": self.message.sent_at,
            "attachments": self.attachment_ids,
            "system": system,
            "sealed": realtime.seal(self.payload),
            "attachment_payloads": "{}",
        }
        self.rows: list[Row] = []
        self.recipients: list[Recipient] = []
        # Recipients whose presence the caller looked up before the statement, and those of
        # them online: their delivered watermark moves in the statement.
        self.known: set[str] = set()
        self.online: set[str] = set()
        self.know(known or (), online or ())

    def know(self, known: Iterable[object], online: Iterable[object]) -> None:
        self.known = {str(key) for key in known}
        self.online = {str(key) for key in online} & self.known
        self.params["online"] = [uuid.UUID(key) for key in self.online]

    def sign_for(self, attached: list[Attachment], member_pks: Iterable[str]) -> None:
        """The attachments' payload for each of ``member_pks`` (links are signed per viewer),
        persisted in their events."""
        self.attachment_payloads = {
            str(pk): [attachment_payload(a, pk) for a in attached] for pk in member_pks
        }
        self.params["attachment_payloads"] = json.dumps(
            self.attachment_payloads, cls=DjangoJSONEncoder
        )

    @staticmethod
    def sql() -> str:
        return write_sql()

    def read(self, rows: list[Row]) -> bool | None:
        """Reads the statement's rows: True when the message was written, False for a replay
        (``self.message`` is then the first one), None for a replay the statement's snapshot
        did not show (the caller reads it with ``FIRST_SEND``). Raises NotFoundError when the
        sender is not a member, APIError for a bad parent or attachment."""
        first = rows[0]
        self.webhooks_written = first[19] or 0  # outbound webhook messages it wrote
        if not self.system and not any(row[1] == self.user.pk for row in rows):
            raise NotFoundError("Conversation not found.")
        message_id, root, replayed = first[6], first[7], first[8]
        if replayed is not None:
            self._replayed(first[8:17])
            return False
        if not first[17]:
            raise _invalid_parent()
        if not first[18]:
            raise invalid_attachment()
        if message_id is None:
            return None
        self.rows = [row for row in rows if row[0] is not None]
        self.message.id = message_id
        self.message.parent_id = root
        self.message._state.adding = False
        self.message._state.db = "default"
        self.recipients = [
            Recipient(pk, str(user_id), muted, muted_until, level)
            for pk, user_id, muted, muted_until, level, *_ in self.rows
            if user_id != self.user.pk
        ]
        return True

    def _replayed(self, row: Sequence[Any]) -> None:
        message_id, type_, content, html, parent_id, metadata, sent_at, edited_at, deleted = row
        self.message = Message(
            id=message_id,
            conversation_id=self.message.conversation_id,
            sender=self.user,
            type=type_,
            content=_CONTENT.from_db_value(content, None, connection),
            html=_HTML.from_db_value(html, None, connection),
            client_id=self.message.client_id,
            parent_id=parent_id,
            metadata=_METADATA.from_db_value(metadata, None, connection),
            sent_at=sent_at,
            edited_at=edited_at,
            deleted_at=deleted,
        )
        self.message._state.adding = False
        self.message._state.db = "default"

    def first_send(self, rows: list[Row]) -> Message:
        if not rows:  # cannot happen: the ON CONFLICT saw it
            raise NotFoundError("Conversation not found.")
        self._replayed(rows[0])
        return self.message

    def unknown_keys(self) -> list[str]:
        """Recipients whose presence is still to be looked up (all, without a hint)."""
        return [key for _, key, *_ in self.recipients if key not in self.known]

    def found_online(self, online: set[str]) -> list[int]:
        """Records the presence lookup of ``unknown_keys``; returns the participant ids now
        known to have it delivered (marked by a statement of their own)."""
        self.online |= set(online)
        return [pk for pk, key, *_ in self.recipients if key in online and key not in self.known]

    def member_keys(self) -> list[str]:
        return [str(row[1]) for row in self.rows]

    def offline(self) -> list[Participant]:
        """The recipients to notify later: offline, not muted; none for a system message."""
        if self.message.type == MessageType.SYSTEM:
            return []
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
        return [p for p in offline if wants_notification(p)]

    def events(self) -> list[Event]:
        base = {
            **self.payload,
            "id": self.message.id,
            "parent_id": self.message.parent_id,
        }
        return [
            (
                user_id,
                {
                    "type": "message.created",
                    "seq": seq,
                    "data": {**base, "attachments": self.attachment_payloads.get(str(user_id), [])},
                },
            )
            for _, user_id, _, _, _, seq, *_ in self.rows
        ]


@functools.cache
def members_sql() -> str:
    return (  # the condition is the model's own, compiled: no input reaches the text
        "SELECT user_id FROM messaging_participant WHERE conversation_id = %(conversation)s "  # noqa: S608
        f"AND {_condition_sql(Participant, ACTIVE_MEMBER)}"
    )


# What the attachments' payloads show. Unlocked: the send's statement locks them and checks
# them again (unsent, the sender's own).
ATTACHMENTS = (
    "SELECT id, content_type, size, width, height, thumbnail FROM messaging_attachment "
    "WHERE id = ANY(%(attachments)s::uuid[]) AND uploader_id = %(sender)s"
)


def signed(send: MessageWrite, members: list[Row], attachments: list[Row]) -> list[str]:
    """Signs the attachments' links for every member; returns the other members' keys."""
    attached = [
        Attachment(id=i, content_type=t, size=n, width=w, height=h, thumbnail=thumb)
        for i, t, n, w, h, thumb in attachments
    ]
    keys = [str(pk) for (pk,) in members]
    send.sign_for(attached, keys)
    return [key for key in keys if key != str(send.user.pk)]
