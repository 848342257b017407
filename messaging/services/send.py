"""Sending a message: ``message_send`` (API, threads; inside a caller's transaction for a
``system_message_send``) and ``message_send_async`` (a websocket, on the event loop). Both run
the one statement of ``messaging.services.statement`` and differ only in how they reach
PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from django.db import connection
from redis.exceptions import RedisError

from communication import adb, realtime
from communication.exceptions import APIError
from communication.models import User
from messaging import admission, conf, presence
from messaging.models import Message, MessageType, Participant
from messaging.services import e2e
from messaging.services.offline import notify_offline_later
from messaging.services.statement import (
    ATTACHMENTS,
    FIRST_SEND,
    MARK_DELIVERED,
    Event,
    MessageWrite,
    invalid_attachment,
    members_sql,
    signed,
)
from notifications.services import webhooks

logger = logging.getLogger(__name__)


def validated(
    content: str | None,
    type_: str,
    attachment_ids: Sequence[object],
    client_id: str | None,
    encrypted: object = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[str, str, str]:
    """A client's message as the send takes it: ``(content, type, client_id)``; raises APIError.

    ``encrypted``: the envelope of a message in an end-to-end encrypted conversation (stored as
    an ``encrypted`` message whose content is the envelope's JSON); it comes alone, without
    content, attachments or metadata."""
    content = content or ""
    if encrypted is not None:
        if content or attachment_ids or metadata:
            raise e2e.plaintext_refused()
        return (
            e2e.envelope_text(e2e.envelope_validated(encrypted)),
            MessageType.ENCRYPTED,
            (client_id or "")[:64],
        )
    if type_ == MessageType.ENCRYPTED:
        raise APIError(
            "An encrypted message is sent as an 'encrypted' envelope.",
            code="invalid_envelope",
            fields={"encrypted": ["Required."]},
        )
    if len(content) > conf.get("MESSAGING_MAX_CONTENT_LENGTH"):
        raise APIError("The message is too long.", fields={"content": ["Too long."]})
    if type_ != MessageType.TEXT:
        raise APIError("Type must be text or encrypted.", fields={"type": ["Invalid type."]})
    if not content.strip() and not attachment_ids:
        raise APIError("A message needs content or attachments.", fields={"content": ["Empty."]})
    if not content.strip():
        type_ = MessageType.ATTACHMENT
    return content, type_, (client_id or "")[:64]


def uuids(values: Iterable[object]) -> list[uuid.UUID]:
    out = []
    for v in values:
        try:
            out.append(uuid.UUID(str(v)))
        except ValueError:
            raise invalid_attachment(f"{v!r} is not an attachment id.") from None
    return out


def _client_send(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    content: str | None,
    client_id: str | None,
    parent_id: int | None,
    attachment_ids: Sequence[object],
    metadata: dict[str, Any] | None,
    type: str,
    encrypted: object = None,
) -> MessageWrite:
    content, type, client_id = validated(
        content, type, attachment_ids, client_id, encrypted, metadata
    )
    return MessageWrite(
        user=user,
        conversation_id=conversation_id,
        content=content,
        type_=type,
        client_id=client_id,
        parent_id=parent_id,
        metadata=metadata,
        attachment_ids=uuids(attachment_ids),
    )


# ------------------------------------------------------------------------------ sync (threads)


def _run(send: MessageWrite) -> Message | None:
    """The statement on Django's connection (inside the caller's transaction, if any), then
    what follows a message: delivered watermarks, the live events after commit, offline
    notifications. None for a replay (``send.message`` is the first message)."""
    with connection.cursor() as cursor:
        cursor.execute(send.sql(), send.params)
        written = send.read(cursor.fetchall())
        if written is None:
            cursor.execute(FIRST_SEND, send.params)
            send.first_send(cursor.fetchall())
    if not written:
        return None
    webhooks.dispatch_after_emit(send.webhooks_written)
    delivered = send.found_online(online_keys(send.unknown_keys()))
    if delivered:
        with connection.cursor() as cursor:
            cursor.execute(MARK_DELIVERED, {"message": send.message.id, "participants": delivered})
    realtime.send_after_commit(send.events())
    notify_offline_later(send.offline(), send.message.conversation_id)
    return send.message


def message_send(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    content: str = "",
    client_id: str = "",
    parent_id: int | None = None,
    attachment_ids: Sequence[object] = (),
    metadata: dict[str, Any] | None = None,
    type: str = MessageType.TEXT,
    encrypted: dict[str, Any] | None = None,
) -> tuple[Message, bool]:
    """Posts a message; returns it and whether it is new.

    Idempotent on ``client_id`` per sender and conversation: a replay returns the first message
    (its content, parent and attachments are not checked again). ``parent_id`` makes it a
    thread reply (threads are one level: a reply to a reply joins the root's thread).
    ``attachment_ids`` are the caller's own unsent uploads. ``encrypted``: the envelope,
    in (and only in) an end-to-end encrypted conversation (``messaging.services.e2e``).
    """
    send = _client_send(
        user=user,
        conversation_id=conversation_id,
        content=content,
        client_id=client_id,
        parent_id=parent_id,
        attachment_ids=attachment_ids,
        metadata=metadata,
        type=type,
        encrypted=encrypted,
    )
    e2e.check_kind(user, conversation_id, envelope=encrypted is not None)
    if send.attachment_ids:  # links are signed per member: the members now
        with connection.cursor() as cursor:
            cursor.execute(members_sql(), send.params)
            members = cursor.fetchall()
            cursor.execute(ATTACHMENTS, send.params)
            others = signed(send, members, cursor.fetchall())
        send.know(others, online_keys(others))
    message = _run(send)
    return send.message, message is not None


def system_message_send(
    conversation_id: uuid.UUID | str, actor: User, text: str, **metadata: object
) -> Message:
    """Records a change to the conversation (a member added, removed, leaving) as a system
    message from ``actor``, inside the caller's transaction."""
    send = MessageWrite(
        user=actor,
        conversation_id=conversation_id,
        content=text,
        type_=MessageType.SYSTEM,
        metadata=metadata,
        system=True,
    )
    _run(send)
    return send.message


# --------------------------------------------------------------------------- async (event loop)


async def message_send_async(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    content: str = "",
    client_id: str = "",
    parent_id: int | None = None,
    attachment_ids: Sequence[object] = (),
    encrypted: dict[str, Any] | None = None,
    known: list[str] | None = None,
    online: set[str] | None = None,
    publish: Callable[[list[Event]], Awaitable[None]] | None = None,
) -> tuple[Message, bool, list[Event], list[Participant], list[str] | None]:
    """``message_send`` from a websocket, on the event loop (``communication.adb`` and Redis'
    asyncio client; no thread hand-offs): the same statement and rules, except that
    ``await publish(events)`` sends the events (``[(user_pk, event)]``) and the caller
    schedules the returned offline participants' notifications.

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
    as ``(first message, False, [], [], None)``. Raises ``admission.OverloadedError`` when
    the process has no room for another send (nothing is written then)."""
    send = _client_send(
        user=user,
        conversation_id=conversation_id,
        content=content,
        client_id=client_id,
        parent_id=parent_id,
        attachment_ids=attachment_ids,
        metadata=None,
        type=MessageType.TEXT,
        encrypted=encrypted,
    )
    # The statements hold one of the process's admission slots (messaging.admission; refused
    # with OverloadedError when there is none); waiting for the disk does not, since one flush
    # serves every waiter and costs them nothing meanwhile.
    async with admission.current().slot():
        await e2e.acheck_kind(user, conversation_id, envelope=encrypted is not None)
        if send.attachment_ids:  # links are signed per member: the members now, not cached ones
            members = await adb.fetchall(members_sql(), send.params)
            known = signed(send, members, await adb.fetchall(ATTACHMENTS, send.params))
            online = await aonline_keys(known)
        send.know(known or (), online or ())
        written = send.read(await adb.fetchall(send.sql(), send.params))
        if written is None:
            send.first_send(await adb.fetchall(FIRST_SEND, send.params))
        if written:
            if send.webhooks_written:  # committed already: no on_commit on the event loop
                await asyncio.to_thread(webhooks.dispatch_enqueue)
            delivered = send.found_online(await aonline_keys(send.unknown_keys()))
            if delivered:
                await adb.fetchall(
                    MARK_DELIVERED, {"message": send.message.id, "participants": delivered}
                )
    if not written:
        await adb.durable()  # the first send may itself be on its way to the disk
        return send.message, False, [], [], None
    events = send.events()
    if publish is not None and conf.get("MESSAGING_DELIVER_BEFORE_FLUSH"):
        await publish(events)
        await adb.durable()
    else:
        await adb.durable()
        if publish is not None:
            await publish(events)
    return send.message, True, events, send.offline(), send.member_keys()


# ----------------------------------------------------------------------------------- presence


def online_keys(keys: list[str]) -> set[str]:
    """Who of ``keys`` has a socket open. The message is already stored when this is asked:
    without Redis, everyone counts as offline (notified later) rather than the send failing."""
    try:
        return presence.online(keys) if keys else set()
    except RedisError:
        logger.warning("presence unavailable", exc_info=True)
        return set()


async def aonline_keys(keys: list[str]) -> set[str]:
    try:
        return await presence.aonline(keys) if keys else set()
    except RedisError:
        logger.warning("presence unavailable", exc_info=True)
        return set()
