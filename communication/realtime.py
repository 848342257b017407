"""The websocket gateway at ``/ws/v1/`` and ``publish()``, the one way services reach it.

A client authenticates with the same JWT as the API: ``?token=`` on the URL or a first message
``{"type": "auth", "token": …}`` within ``WS_AUTH_TIMEOUT`` seconds (never a cookie). Everything
for a user goes to the group ``user.<uuid>``. Later issues add event types (notifications,
messages, receipts, typing, presence) and per-user sequence numbers with replay.

Every client frame is rate-limited per socket and kind (``FrameLimiter``: ``MESSAGING_WS_RATE``
a second, bursts of ``MESSAGING_WS_BURST``; ``resume`` ``WS_RESUME_PER_MINUTE`` a minute); one over
the limit is answered ``{"type": "error", "code": "rate_limited", "retry_after": seconds}`` and the
socket stays open. A string holding NUL anywhere in a frame is refused (``validation_error``
naming the field) before any handler sees it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection, transaction

from communication import content_access, dboutage
from communication.auth.authentication import authenticate_token
from communication.auth.tokens import ServicePrincipal
from communication.exceptions import TokenError
from communication.models import RealtimeEvent, UserSequence

logger = logging.getLogger(__name__)

WS_AUTH_TIMEOUT = 10
CLOSE_AUTH_FAILED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TRY_AGAIN_LATER = 1013  # the database unreachable when the socket signs in
REPLAY_LIMIT = 1000


def user_group(user_pk) -> str:
    return f"user.{user_pk}"


def _layer() -> BaseChannelLayer:
    """The default channel layer, which the settings always configure."""
    layer = get_channel_layer()
    if layer is None:
        raise ImproperlyConfigured("CHANNEL_LAYERS has no default layer")
    return layer


def publish(user_pk: Any, event: Mapping[str, Any]) -> None:
    """Sends an ephemeral ``event`` (typing, presence …: no ``seq``, not replayed) to every socket
    of the user once the current transaction commits."""

    def send():
        layer = _layer()
        async_to_sync(layer.group_send)(user_group(user_pk), {"type": "deliver", "event": event})

    transaction.on_commit(send)


def sequence_events_sql(*, source: str, type_sql: str, events: str = "events") -> str:
    """The one definition of how events take their ``seq``: two CTEs, to follow a ``WITH`` and
    ``source``, a CTE (or table) with the columns ``user_id``, ``data`` (jsonb) and ``sealed``
    (the encrypted payload: ``RealtimeEvent.sealed``'s ``get_db_prep_value``), one row per
    user. ``{events}_seq`` takes each user's next ``seq`` and ``{events}`` inserts the events
    of type ``type_sql`` (an SQL expression: a placeholder or a literal), returning
    ``(user_id, seq)``.

    The sequence rows are taken in user order, so concurrent fan-outs cannot deadlock, and stay
    locked until the transaction commits, which keeps the numbers gap-free and in commit order.
    ``publish_event``, ``publish_events`` and statements of other apps (a message's send) embed
    it; the tables are named from the models here only.
    """
    sequences = UserSequence._meta.db_table
    # Names from the models and SQL from our own callers: no input reaches the text.
    return (
        f"{events}_seq AS (INSERT INTO {sequences} (user_id, last_seq) "  # noqa: S608
        f"SELECT user_id, 1 FROM {source} ORDER BY user_id ON CONFLICT (user_id) DO UPDATE "
        f"SET last_seq = {sequences}.last_seq + 1 RETURNING user_id, last_seq), "
        f"{events} AS (INSERT INTO {RealtimeEvent._meta.db_table} "
        "(user_id, seq, type, data, sealed, created_at) "
        f"SELECT s.user_id, s.last_seq, {type_sql}, d.data, d.sealed, now() "
        f"FROM {events}_seq s JOIN {source} d USING (user_id) RETURNING user_id, seq)"
    )


_SEALED = RealtimeEvent._meta.get_field("sealed")

_PUBLISH = (  # values are parameters: no input reaches the text
    "WITH d AS (SELECT user_id, '{}'::jsonb AS data, sealed "  # noqa: S608
    "FROM unnest(%s::uuid[], %s::bytea[]) AS d (user_id, sealed)), "
    + sequence_events_sql(source="d", type_sql="%s")
    + " SELECT user_id, seq FROM events"
)


def seal(payload: Mapping[str, Any]) -> bytes:
    """``payload`` as ``RealtimeEvent.sealed`` stores it (encrypted), for a statement's
    ``sealed`` column."""
    return cast(bytes, _SEALED.encrypted(payload))


def publish_event(user_pk, type_: str, data: dict) -> int:
    """Persists an event with the user's next gap-free ``seq`` and sends it after commit.

    Must run inside a transaction (the sequence row stays locked until it commits, which is what
    keeps the numbers gap-free and in commit order). Returns the ``seq``.
    """
    return next(iter(publish_events(type_, {user_pk: data}).values()))


def publish_events(type_: str, data_by_user: dict) -> dict:
    """``publish_event`` for many users at once (a message to every member of a conversation):
    one statement takes every user's next ``seq`` and inserts the events, and one hop to the
    event loop sends them after commit. Same guarantees as ``publish_event``. Returns
    ``{user_pk: seq}`` (keys as given).
    """
    if not data_by_user:
        return {}
    keys = {str(pk): pk for pk in data_by_user}
    ordered = sorted(keys)
    # One encryption per distinct payload (a message's payload is usually the same for everyone).
    encoded: dict[int, bytes] = {}
    sealed = []
    for pk in ordered:
        data = data_by_user[keys[pk]]
        token = encoded.get(id(data))
        if token is None:
            token = encoded[id(data)] = seal(data)
        sealed.append(token)
    with connection.cursor() as cursor:
        cursor.execute(_PUBLISH, [ordered, sealed, type_])
        seqs = {str(user_id): seq for user_id, seq in cursor.fetchall()}
    send_after_commit(
        [
            (keys[pk], {"type": type_, "seq": seqs[pk], "data": data_by_user[keys[pk]]})
            for pk in ordered
        ]
    )
    return {keys[pk]: seqs[pk] for pk in ordered}


def send_after_commit(events: list[tuple]) -> None:
    """Sends ``[(user_pk, event)]`` to the users' sockets, in one hop to the event loop, once
    the current transaction commits (at once outside one). For events already persisted with
    their ``seq`` by the caller's own statement; ``publish_events`` does both."""

    if not events:
        return
    collected = _collector.get()
    if collected is not None:  # run_collecting: the event loop sends them once the call is done
        transaction.on_commit(lambda: collected.extend(events))
        return
    transaction.on_commit(lambda: async_to_sync(send_events)(events))


_collector: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "realtime_collector", default=None
)


async def run_collecting(executor, fn, *args, **kwargs):
    """Runs the sync ``fn`` on ``executor`` (a consumer's database work) and sends the events it
    published from the event loop once it returns, instead of hopping back to the loop from the
    thread to send each batch. The thread keeps its database connection between calls (closed
    after a database error); events committed before an error are still sent."""
    events: list = []

    def run():
        token = _collector.set(events)
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            connection.close()
            raise
        finally:
            _collector.reset(token)

    try:
        return await asyncio.get_running_loop().run_in_executor(executor, run)
    finally:
        await send_events(events)


async def send_events(events: list[tuple]) -> None:
    """Sends ``[(user_pk, event)]``, already persisted, to the users' sockets (from the loop)."""
    if events:
        layer = _layer()
        await asyncio.gather(
            *(
                layer.group_send(user_group(pk), {"type": "deliver", "event": event})
                for pk, event in events
            )
        )


# Client → server message types other apps handle (messaging: message.send, typing, read,
# presence.ping …): ``handlers["typing"] = async fn(consumer, content)``. A handler validates its
# input and answers errors with ``await consumer.send_error(code, detail)``; it never closes the
# socket for bad input. Registered in the app's ``ready()``.
handlers: dict = {}
# ``async fn(consumer)`` called after a socket authenticates / when it closes (presence).
connect_hooks: list = []
disconnect_hooks: list = []

# Apps add fields to the "ready" message (e.g. notifications adds the unread count) without the
# gateway importing them: each hook takes the user and returns a dict.
ready_hooks: list = []


def _ready_payload(user) -> dict:
    row = UserSequence.objects.filter(user=user).first()
    payload = {"type": "ready", "user_id": user.external_id, "seq": row.last_seq if row else 0}
    for hook in ready_hooks:
        payload.update(hook(user))
    return payload


def _missed(user, after_seq: int) -> list[dict] | None:
    """Events after ``after_seq``, or None when some of them are no longer kept."""
    rows = list(
        RealtimeEvent.objects.filter(user=user, seq__gt=after_seq)
        .order_by("seq")
        .only("seq", "type", "data", "sealed")[: REPLAY_LIMIT + 1]
    )
    if len(rows) > REPLAY_LIMIT:
        return None
    expected_first = after_seq + 1
    if rows and rows[0].seq != expected_first:
        return None  # pruned
    if not rows:
        row = UserSequence.objects.filter(user=user).first()
        latest = row.last_seq if row else 0
        # Past the latest: the client saw events this database no longer has (a crash took
        # them before they reached the disk, or the database was restored).
        if latest != after_seq:
            return None
    return [{"type": r.type, "seq": r.seq, "data": r.payload} for r in rows]


class OriginAllowListValidator:
    """A browser's ``Origin`` must be on ``ALLOWED_ORIGINS`` or be the service itself (the ``/app/``
    pages it serves); no ``Origin`` (apps, services) passes, since the token, not the browser,
    carries the authority."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        origin = None
        for name, value in scope.get("headers", []):
            if name == b"origin":
                origin = value.decode("latin1")
        if origin is not None and not _origin_allowed(origin, scope):
            await send({"type": "websocket.close", "code": CLOSE_FORBIDDEN})
            return
        return await self.app(scope, receive, send)


def _origin_allowed(origin: str, scope) -> bool:
    if _same_origin(origin, scope):
        return True
    allowed = set(settings.ALLOWED_ORIGINS)
    allowed.add(settings.PUBLIC_BASE_URL)
    return origin.rstrip("/") in {o.rstrip("/") for o in allowed}


def _same_origin(origin: str, scope) -> bool:
    """The page's origin names the host this socket was opened on (scheme http or https: behind a
    TLS proxy the socket itself may be plain)."""
    host = next((v.decode("latin1") for n, v in scope.get("headers", []) if n == b"host"), None)
    scheme, _, netloc = origin.rstrip("/").partition("://")
    return host is not None and scheme in ("http", "https") and netloc.lower() == host.lower()


@database_sync_to_async
def _authenticate(token: str):
    return authenticate_token(token)


@database_sync_to_async
def _record_acting(user, service: str) -> None:
    """A socket opened with a token issued to a service acting for ``user`` receives (and
    replays) their messages: one access entry for the connection."""
    content_access.access_record(
        content_access.CONVERSATION_READ_BY_SERVICE,
        "communication.user",
        user.external_id,
        details={"on_behalf_of": user.external_id, "what": "websocket"},
        actor=service,
    )


_ready = database_sync_to_async(_ready_payload)
_replay = database_sync_to_async(_missed)


_UNDECODABLE = object()


def nul_field(value, path: str = "") -> str | None:
    """The first field (``content``, ``data.key``, ``attachments[0]``) of a decoded JSON value
    whose name or string value holds a NUL character, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return name.replace("\x00", "\\u0000")
            found = nul_field(item, name)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = nul_field(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _echo(content) -> dict:
    """The frame's ``client_id``, when it has a usable one, for the client to match the answer."""
    client_id = content.get("client_id") if isinstance(content, dict) else None
    if isinstance(client_id, str) and len(client_id) <= 64 and "\x00" not in client_id:
        return {"client_id": client_id}
    return {}


class FrameLimiter:
    """Token buckets per frame kind for one socket: ``take`` returns 0 when the frame may go,
    else the seconds until it could."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, kind: str, rate: float, burst: float) -> float:
        now = time.monotonic()
        tokens, last = self._buckets.get(kind, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1:
            self._buckets[kind] = (tokens, now)
            return (1 - tokens) / rate
        self._buckets[kind] = (tokens - 1, now)
        return 0.0


class GatewayConsumer(AsyncJsonWebsocketConsumer):
    user = None
    _auth_timer: asyncio.Task | None = None
    _expiry_timer: asyncio.Task | None = None

    async def connect(self):
        self._limiter = FrameLimiter()
        await self.accept()
        token = parse_qs(self.scope.get("query_string", b"").decode()).get("token", [None])[0]
        if token:
            await self._login(token)
        else:
            self._auth_timer = asyncio.create_task(self._auth_deadline())

    async def _auth_deadline(self):
        await asyncio.sleep(WS_AUTH_TIMEOUT)
        if self.user is None:
            await self.send_json(
                {
                    "type": "error",
                    "code": "token_missing",
                    "detail": "Authenticate within 10 seconds.",
                }
            )
            await self.close(code=CLOSE_AUTH_FAILED)

    async def _login(self, token: str) -> bool:
        try:
            principal, claims = await _authenticate(token)
        except TokenError as exc:
            await self.send_json({"type": "error", "code": exc.code, "detail": str(exc.detail)})
            await self.close(code=CLOSE_AUTH_FAILED)
            return False
        except Exception as exc:
            if not dboutage.is_outage(exc):
                raise
            await self._unavailable()
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
            return False
        if isinstance(principal, ServicePrincipal):
            await self.send_json(
                {
                    "type": "error",
                    "code": "permission_denied",
                    "detail": "The gateway is for user tokens.",
                }
            )
            await self.close(code=CLOSE_FORBIDDEN)
            return False
        acting = content_access.acting_service(claims)
        if acting is not None:  # recorded before anything of theirs is sent
            await _record_acting(principal, acting)
        self.user = principal
        await self.channel_layer.group_add(user_group(principal.pk), self.channel_name)
        # The hooks (presence) run before "ready": a client that has its "ready" is online.
        for hook in connect_hooks:
            await hook(self)
        await self.send_json(await _ready(principal))
        self._expiry_timer = asyncio.create_task(self._expire_at(claims.get("exp")))
        return True

    async def dispatch(self, message):
        # Channels hops to its one shared sync thread to close stale database connections before
        # every message a consumer handles: every frame received and every event delivered, a
        # queue through one thread for all the sockets of the process. The gateway's own
        # database calls run in DatabaseSyncToAsync, which closes them around itself; the
        # apps' run in run_collecting, whose threads keep theirs and close it after an error.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def send_error(self, code: str, detail: str, **extra) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail, **extra})

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Bad input is answered, not fatal: the socket stays open. Every frame, good or bad,
        # first takes a token from its kind's bucket.
        content = None
        if text_data is not None:
            try:
                content = await self.decode_json(text_data)
            except ValueError:
                content = _UNDECODABLE
        if not await self._allowed(content):
            return
        if content is None:
            await self.send_error("validation_error", "Messages are JSON text frames.")
            return
        if content is _UNDECODABLE:
            await self.send_error("validation_error", "Message is not valid JSON.")
            return
        # PostgreSQL refuses NUL in text and JSONB; JSON can carry one only as the escape, so
        # the walk runs only for frames that contain it.
        if "\\u0000" in text_data:
            field = nul_field(content)
            if field is not None:
                await self.send_error(
                    "validation_error",
                    f"{field!r} contains a NUL character.",
                    fields={field: ["NUL characters are not allowed."]},
                    **_echo(content),
                )
                return
        await self.receive_json(content, **kwargs)

    async def _allowed(self, content) -> bool:
        """Takes a token from the frame's bucket, or answers ``rate_limited`` (socket kept)."""
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "resume":
            per_minute = settings.WS_RESUME_PER_MINUTE
            rate, burst = per_minute / 60.0, per_minute
        else:
            rate, burst = settings.MESSAGING_WS_RATE, settings.MESSAGING_WS_BURST
            if not isinstance(kind, str):
                kind = "invalid"
            elif kind not in handlers and kind not in ("auth", "ping"):
                kind = "unknown"  # one bucket, however many names a client invents
        wait = self._limiter.take(kind, rate, burst)
        if not wait:
            return True
        await self.send_json(
            {
                "type": "error",
                "code": "rate_limited",
                "detail": f"Too many {kind!r} messages; slow down.",
                "retry_after": math.ceil(wait * 1000) / 1000,
                **_echo(content),
            }
        )
        return False

    async def _expire_at(self, exp):
        """Closes the socket (4401) when its token expires; the client reconnects with a new one."""
        if not isinstance(exp, (int, float)):
            return
        await asyncio.sleep(max(exp - time.time(), 0))
        await self.send_json(
            {
                "type": "error",
                "code": "token_expired",
                "detail": "Token has expired; reconnect with a new one.",
            }
        )
        await self.close(code=CLOSE_AUTH_FAILED)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_json(
                {
                    "type": "error",
                    "code": "validation_error",
                    "detail": "Every message is an object with a 'type'.",
                }
            )
            return
        kind = content["type"]
        if self.user is None:
            if kind == "auth" and isinstance(content.get("token"), str):
                if self._auth_timer:
                    self._auth_timer.cancel()
                await self._login(content["token"])
                return
            await self.send_json(
                {
                    "type": "error",
                    "code": "token_missing",
                    "detail": "Send {'type': 'auth', 'token': …} first.",
                }
            )
            return
        try:
            await self._handle(kind, content)
        except Exception as exc:
            # The database unreachable: the sender hears so and may retry; the socket stays.
            if not dboutage.is_outage(exc):
                raise
            await self._unavailable()

    async def _unavailable(self) -> None:
        await self.send_error(
            "unavailable",
            "The database is unreachable; try again shortly.",
            retry_after=settings.DB_UNAVAILABLE_RETRY_AFTER,
        )

    async def _handle(self, kind: str, content: dict) -> None:
        if kind == "resume":
            # A consumer handles its frames one after another, so one replay at most is in
            # flight per socket; _allowed keeps them to a few a minute.
            after = content.get("after_seq")
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                await self.send_json(
                    {
                        "type": "error",
                        "code": "validation_error",
                        "detail": "'after_seq' must be a non-negative integer.",
                    }
                )
                return
            missed = await _replay(self.user, after)
            if missed is None:
                await self.send_json({"type": "resync_required"})
                return
            for event in missed:
                await self.send_json(event)
            return
        if kind == "ping":
            await self.send_json({"type": "pong", "id": content.get("id")})
            return
        handler = handlers.get(kind)
        if handler is not None:
            await handler(self, content)
            return
        await self.send_json(
            {
                "type": "error",
                "code": "validation_error",
                "detail": f"Unknown message type {kind!r}.",
            }
        )

    async def deliver(self, message):
        # A client that stops reading fills its socket's buffers, and then every write to it
        # waits (uvicorn), for as long as the peer keeps the TCP connection: its events would
        # pile up in this process meanwhile. Past WS_SEND_TIMEOUT the socket is let go: its
        # subscriptions end (nothing more queues for it) and uvicorn closes it once what it
        # holds is read; the client reconnects and resumes from its last seq.
        try:
            async with asyncio.timeout(settings.WS_SEND_TIMEOUT):
                await self.send_json(message["event"])
        except TimeoutError:
            logger.warning("websocket client is not reading: let go")
            await self.disconnect(1006)  # no close frame can reach it: an abnormal closure
            raise StopConsumer from None

    async def disconnect(self, code):
        for timer in (self._auth_timer, self._expiry_timer):
            if timer:
                timer.cancel()
        if self.user is not None:
            await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)
            for hook in disconnect_hooks:
                try:
                    await hook(self)
                except Exception:  # one app's hook must not stop the others
                    logger.exception("disconnect hook failed")
