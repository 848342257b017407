"""Messaging on the websocket gateway: client messages ``message.send``, ``conversation.create``,
``typing``, ``read``, ``presence.ping`` and the connect/disconnect hooks that keep presence.

Each handler validates its input and answers bad input with an ``error`` event; the socket stays
open. The gateway rate-limits every frame kind per connection before a handler sees it
(communication.realtime.FrameLimiter). Database work runs on a small
thread pool of its own rather than Channels' single shared thread, so one slow query does not hold
up every socket of the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

from django.utils import timezone
from redis.exceptions import RedisError

from communication.exceptions import APIError
from communication.models import User
from communication.realtime import run_collecting, send_events, user_group
from messaging import admission, conf, presence, selectors, services
from messaging.models import ConversationType
from messaging.services.payloads import PresenceEvent, conversation_payload

logger = logging.getLogger(__name__)

_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="messaging-db")
MEMBERSHIP_CACHE_SECONDS = 10.0
MAX_PRESENCE_QUERY = 100


def db(fn):
    """``fn`` on this module's thread pool; the events it publishes go out from the loop."""

    async def call(*args, **kwargs):
        return await run_collecting(_executor, fn, *args, **kwargs)

    return call


class ConnectionState:
    def __init__(self):
        self.typing: dict[str, asyncio.Task] = {}
        self.members: dict[str, tuple[float, list]] = {}


def _state(consumer) -> ConnectionState:
    state = getattr(consumer, "_messaging", None)
    if state is None:
        state = consumer._messaging = ConnectionState()
    return state


async def _send_to_users(consumer, user_pks: Iterable[str], event: Mapping[str, object]) -> None:
    layer = consumer.channel_layer
    await asyncio.gather(
        *(layer.group_send(user_group(pk), {"type": "deliver", "event": event}) for pk in user_pks)
    )


def _conversation_id(consumer, content) -> str | None:
    value = content.get("conversation_id")
    try:
        return str(uuid.UUID(str(value))) if isinstance(value, str) else None
    except ValueError:
        return None


async def _members(consumer, conversation_id: str) -> list | None:
    """The conversation's member pks when the caller is one (cached briefly), else None."""
    state = _state(consumer)
    cached = state.members.get(conversation_id)
    now = time.monotonic()
    if cached and cached[0] > now:
        members = cached[1]
    else:
        members = [str(pk) for pk in await db(selectors.member_pks)(conversation_id)]
        state.members[conversation_id] = (now + MEMBERSHIP_CACHE_SECONDS, members)
    return members if str(consumer.user.pk) in members else None


async def _api_error(consumer, exc: APIError, **extra) -> None:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    await consumer.send_error(exc.code, detail, **extra)


# ------------------------------------------------------------------------------ message.send


async def handle_message_send(consumer, content: dict) -> None:
    conversation_id = _conversation_id(consumer, content)
    body = content.get("content", "")
    client_id = content.get("client_id", "")
    parent_id = content.get("parent_id")
    attachment_ids = content.get("attachments") or []
    envelope = content.get("encrypted")  # end-to-end: checked by the send (services.e2e)
    problems = []
    if conversation_id is None:
        problems.append("'conversation_id' must be a conversation id")
    if not isinstance(body, str):
        problems.append("'content' must be a string")
    if not isinstance(client_id, str) or len(client_id) > 64:
        problems.append("'client_id' must be a string of at most 64 characters")
    if parent_id is not None and (not isinstance(parent_id, int) or isinstance(parent_id, bool)):
        problems.append("'parent_id' must be a message id")
    if not isinstance(attachment_ids, list):
        problems.append("'attachments' must be a list of ids")
    if problems or conversation_id is None:  # a None conversation_id is among the problems
        await consumer.send_error(
            "validation_error", "; ".join(problems) + ".", client_id=_safe(client_id)
        )
        return
    try:
        message, created = await _send(
            consumer, conversation_id, body, client_id, parent_id, attachment_ids, envelope
        )
    except admission.OverloadedError as exc:
        await consumer.send_error(
            "overloaded",
            "The server is busy; send again later with the same client_id.",
            retry_after=exc.retry_after,
            client_id=_safe(client_id),
        )
        return
    except APIError as exc:
        await _api_error(consumer, exc, client_id=_safe(client_id))
        return
    except RedisError:
        # The channel layer is unreachable: the message may be stored, but nobody was told.
        # Resending with the same client_id gives the one message and its ack.
        logger.warning("channel layer unavailable", exc_info=True)
        await consumer.send_error(
            "unavailable",
            "Live delivery is unavailable; send again later with the same client_id.",
            retry_after=conf.get("MESSAGING_WS_RETRY_AFTER"),
            client_id=_safe(client_id),
        )
        return
    # The message.created event (with seq) is on its way to every socket of the sender; this
    # answers this socket even for a replay, which publishes nothing.
    await consumer.send_json(
        {
            "type": "message.ack",
            "client_id": client_id or None,
            "id": message.id,
            "conversation_id": conversation_id,
            "replay": not created,
        }
    )
    await _typing_stop(consumer, conversation_id)


async def _send(
    consumer, conversation_id: str, body: str, client_id, parent_id, attachment_ids, envelope=None
):
    """The send on the event loop: one statement, then its events from here. With the
    conversation's members known from this socket's previous send or typing, their presence is
    looked up first and their delivered watermarks move in that same statement."""
    state = _state(consumer)
    me = str(consumer.user.pk)
    cached = state.members.get(conversation_id)
    known = online = None
    if cached and cached[0] > time.monotonic():
        known = [pk for pk in cached[1] if pk != me]
        try:
            online = await presence.aonline(known)
        except RedisError:  # the send looks them up itself, and copes without Redis
            known = online = None
    message, created, _events, offline, members = await services.message_send_async(
        user=consumer.user,
        conversation_id=conversation_id,
        content=body,
        client_id=client_id,
        parent_id=parent_id,
        attachment_ids=attachment_ids,
        encrypted=envelope,
        known=known,
        online=online,
        publish=send_events,
    )
    if members is not None:
        state.members[conversation_id] = (time.monotonic() + MEMBERSHIP_CACHE_SECONDS, members)
    if offline:
        await asyncio.get_running_loop().run_in_executor(
            _executor, services.schedule_offline_notifications, offline, conversation_id
        )
    return message, created


def _safe(value):
    return value if isinstance(value, str) and len(value) <= 64 else None


# ------------------------------------------------------------------------- conversation.create


def _create_conversation(user: User, kind: str, participants: list, title: str) -> dict:
    conversation, created = services.conversation_create(
        user=user, type=kind, participants=participants, title=title
    )
    members = list(selectors.active_participants(conversation.id))
    return {"created": created, "conversation": conversation_payload(conversation, members)}


async def handle_conversation_create(consumer, content: dict) -> None:
    """The API's ``POST /conversations`` over the socket (the same service, so the same rules):
    answered ``conversation.created`` with the conversation, or an ``error``."""
    client_id = content.get("client_id", "")
    kind = content.get("conversation_type")
    participants = content.get("participants", [])
    title = content.get("title", "")
    problems = []
    if kind not in ConversationType.values:
        problems.append(f"'conversation_type' must be one of {', '.join(ConversationType.values)}")
    if (
        not isinstance(participants, list)
        or len(participants) > conf.get("MESSAGING_MAX_PARTICIPANTS")
        or not all(isinstance(p, str) and 0 < len(p) <= 255 for p in participants)
    ):
        problems.append("'participants' must be a list of user ids")
    if not isinstance(title, str) or len(title) > 255:
        problems.append("'title' must be a string of at most 255 characters")
    if not isinstance(client_id, str) or len(client_id) > 64:
        problems.append("'client_id' must be a string of at most 64 characters")
    if problems:
        await consumer.send_error(
            "validation_error", "; ".join(problems) + ".", client_id=_safe(client_id)
        )
        return
    try:
        result = await db(_create_conversation)(consumer.user, kind, participants, title)
    except APIError as exc:
        await _api_error(consumer, exc, client_id=client_id)
        return
    await consumer.send_json({"type": "conversation.created", "client_id": client_id, **result})


# ------------------------------------------------------------------------------------ typing


async def handle_typing(consumer, content: dict) -> None:
    conversation_id = _conversation_id(consumer, content)
    state_name = content.get("state", "started")
    if conversation_id is None or state_name not in ("started", "stopped"):
        await consumer.send_error(
            "validation_error",
            "Send {'type': 'typing', 'conversation_id': …, 'state'?: 'started' | 'stopped'}.",
        )
        return
    if await _members(consumer, conversation_id) is None:
        await consumer.send_error("not_found", "Conversation not found.")
        return
    if state_name == "stopped":
        await _typing_stop(consumer, conversation_id)
        return
    state = _state(consumer)
    running = state.typing.get(conversation_id)
    if running is not None and not running.done():
        running.cancel()  # renewed: the 5 s start again, nothing is re-sent
    else:
        await _typing_send(consumer, conversation_id, "started")
    state.typing[conversation_id] = asyncio.create_task(_typing_expire(consumer, conversation_id))


async def _typing_expire(consumer, conversation_id: str) -> None:
    await asyncio.sleep(conf.get("MESSAGING_TYPING_TIMEOUT_SECONDS"))
    _state(consumer).typing.pop(conversation_id, None)
    await _typing_send(consumer, conversation_id, "stopped")


async def _typing_stop(consumer, conversation_id: str) -> None:
    task = _state(consumer).typing.pop(conversation_id, None)
    if task is not None and not task.done():
        task.cancel()
        await _typing_send(consumer, conversation_id, "stopped")


async def _typing_send(consumer, conversation_id: str, state_name: str) -> None:
    members = _state(consumer).members.get(conversation_id, (0, []))[1]
    me = str(consumer.user.pk)
    await _send_to_users(
        consumer,
        [pk for pk in members if pk != me],
        {
            "type": "typing",
            "data": {
                "conversation_id": conversation_id,
                "user_id": consumer.user.external_id,
                "state": state_name,
            },
        },
    )


# -------------------------------------------------------------------------------------- read


async def handle_read(consumer, content: dict) -> None:
    conversation_id = _conversation_id(consumer, content)
    message_id = content.get("message_id")
    if (
        conversation_id is None
        or not isinstance(message_id, int)
        or isinstance(message_id, bool)
        or message_id <= 0
    ):
        await consumer.send_error(
            "validation_error", "Send {'type': 'read', 'conversation_id': …, 'message_id': …}."
        )
        return
    try:
        await db(services.conversation_mark_read)(
            user=consumer.user, conversation_id=conversation_id, message_id=message_id
        )
    except APIError as exc:
        await _api_error(consumer, exc)


# ---------------------------------------------------------------------------------- presence


async def handle_presence_ping(consumer, content: dict) -> None:
    """Renews this socket's heartbeat; with ``user_ids`` (contacts only) answers their presence."""
    wanted = content.get("user_ids")
    if wanted is not None and (
        not isinstance(wanted, list)
        or len(wanted) > MAX_PRESENCE_QUERY
        or not all(isinstance(u, str) for u in wanted)
    ):
        await consumer.send_error(
            "validation_error", f"'user_ids' must be a list of at most {MAX_PRESENCE_QUERY} ids."
        )
        return
    await presence.heartbeat(consumer.user.pk, consumer.channel_name)
    if not wanted:
        return
    for event in await _presence_of(consumer, wanted):
        await consumer.send_json(event)


async def _presence_of(consumer, external_ids: list[str]) -> list[PresenceEvent]:
    rows = await db(selectors.contacts_last_seen)(consumer.user.pk, external_ids)
    live = await presence.aonline([pk for pk, _, _ in rows])
    return [
        {
            "type": "presence",
            "data": {
                "user_id": ext,
                "state": "online" if pk in live else "offline",
                "last_seen": (
                    timezone.now().isoformat()
                    if pk in live
                    else (seen.isoformat() if seen else None)
                ),
            },
        }
        for pk, ext, seen in rows
    ]


def _went(user: User, state_name: str) -> tuple[list[str], PresenceEvent]:
    """Persists last seen and returns (contacts, event) for an online/offline transition."""
    when = services.presence_seen(user.pk)
    contacts = [str(pk) for pk in selectors.contacts_of(user.pk)]
    return contacts, services.presence_event(user, state_name, when)


async def on_connect(consumer) -> None:
    try:
        became_online = await presence.connection_open(consumer.user.pk, consumer.channel_name)
    except Exception:  # Redis down: messaging still works, presence does not
        logger.warning("presence unavailable", exc_info=True)
        return
    presence.track(consumer.user.pk, consumer.channel_name)
    if became_online:
        contacts, event = await db(_went)(consumer.user, "online")
        await _send_to_users(consumer, contacts, event)


async def on_disconnect(consumer) -> None:
    state = _state(consumer)
    presence.untrack(consumer.channel_name)
    for conversation_id in list(state.typing):
        await _typing_stop(consumer, conversation_id)
    became_offline = await presence.connection_close(consumer.user.pk, consumer.channel_name)
    if became_offline:
        contacts, event = await db(_went)(consumer.user, "offline")
        await _send_to_users(consumer, contacts, event)


HANDLERS = {
    "message.send": handle_message_send,
    "conversation.create": handle_conversation_create,
    "typing": handle_typing,
    "read": handle_read,
    "presence.ping": handle_presence_ping,
}
