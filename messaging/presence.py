"""Who is online, in Redis, across every ASGI process.

Each open socket is a member of the sorted set ``<prefix>:u:<user pk>`` scored by the time its
heartbeat expires; the process holding the socket renews it every ``HEARTBEAT`` seconds (and on a
client's ``presence.ping``): one task per event loop renews a slice of the loop's sockets each
second in one pipeline, rather than a task and a transaction per socket. A user is online while
one member has not expired, so a process that dies without closing its sockets stops counting
once their heartbeats lapse; the sweep task then turns those users offline. ``<prefix>:users``
scores each user by their latest expiry so the sweep finds lapsed users without scanning keys.
Losing Redis loses only who is online now: last seen is persisted in ``UserPresence``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

import redis
import redis.asyncio as aioredis
from django.conf import settings

from messaging import conf

logger = logging.getLogger(__name__)

_sync_clients: dict[str, redis.Redis] = {}
_async_clients: dict[int, aioredis.Redis] = {}
_renewers: dict[int, _Renewer] = {}


def _prefix() -> str:
    return conf.get("MESSAGING_PRESENCE_PREFIX")


def _user_key(user_pk) -> str:
    return f"{_prefix()}:u:{user_pk}"


def _users_key() -> str:
    return f"{_prefix()}:users"


def client() -> redis.Redis:
    url = settings.REDIS_URL
    if url not in _sync_clients:
        _sync_clients[url] = redis.Redis.from_url(url, socket_timeout=2)
    return _sync_clients[url]


def aclient() -> aioredis.Redis:
    # One client per event loop: an asyncio connection is bound to the loop that opened it.
    # Its pool is bounded and makes callers wait for a free connection: redis-py's default
    # pool raises "Too many connections" past 100, which a storm of connects and heartbeats
    # from a thousand sockets reached, and every new connection costs (redis-py reads its own
    # package metadata each time).
    loop = asyncio.get_running_loop()
    key = id(loop)
    if key not in _async_clients:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=conf.get("MESSAGING_PRESENCE_MAX_CONNECTIONS"),
            timeout=5,
            socket_timeout=2,
        )
        _async_clients[key] = aioredis.Redis(connection_pool=pool)
    return _async_clients[key]


def _ttl() -> int:
    return conf.get("MESSAGING_PRESENCE_TTL_SECONDS")


async def connection_open(user_pk, connection_id: str) -> bool:
    """Records a socket; True when the user was offline before it (an online transition)."""
    now = time.time()
    expires = now + _ttl()
    key = _user_key(user_pk)
    async with aclient().pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zcard(key)
        pipe.zadd(key, {connection_id: expires})
        pipe.expire(key, _ttl() * 2)
        pipe.zadd(_users_key(), {str(user_pk): expires}, gt=True)
        _, before, *_ = await pipe.execute()
    return before == 0


async def heartbeat(user_pk, connection_id: str) -> None:
    async with aclient().pipeline(transaction=True) as pipe:
        _renew(pipe, user_pk, connection_id, time.time() + _ttl())
        await pipe.execute()


def _renew(pipe, user_pk, connection_id: str, expires: float) -> None:
    pipe.zadd(_user_key(user_pk), {connection_id: expires})
    pipe.expire(_user_key(user_pk), _ttl() * 2)
    pipe.zadd(_users_key(), {str(user_pk): expires}, gt=True)


class _Renewer:
    """Renews the heartbeats of one event loop's sockets: each socket has a slot among
    ``HEARTBEAT`` one-second slots, and each second one pipeline renews the current slot's.

    The sockets that connected in the same few seconds (a deploy, a reconnect storm) are spread
    over the slots, so their renewals do not come back all at once."""

    def __init__(self):
        self.slots: list[dict[str, str]] = []
        self.where: dict[str, int] = {}
        self.next_slot = 0
        self.task: asyncio.Task | None = None

    def add(self, user_pk, connection_id: str) -> None:
        every = max(1, conf.get("MESSAGING_PRESENCE_HEARTBEAT_SECONDS"))
        if len(self.slots) != every:  # first use, or the setting changed: spread again
            sockets = {c: u for slot in self.slots for c, u in slot.items()}
            self.slots, self.where, self.next_slot = [{} for _ in range(every)], {}, 0
            for c, u in sockets.items():
                self._place(u, c)
        self._place(user_pk, connection_id)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def _place(self, user_pk, connection_id: str) -> None:
        slot = self.next_slot
        self.next_slot = (slot + 1) % len(self.slots)
        self.slots[slot][connection_id] = str(user_pk)
        self.where[connection_id] = slot

    def discard(self, connection_id: str) -> None:
        slot = self.where.pop(connection_id, None)
        if slot is not None:
            self.slots[slot].pop(connection_id, None)

    async def _run(self) -> None:
        tick = 0
        while self.where:
            await asyncio.sleep(1)
            tick += 1
            due = list(self.slots[tick % len(self.slots)].items())
            if not due:
                continue
            try:
                expires = time.time() + _ttl()
                async with aclient().pipeline(transaction=False) as pipe:
                    for connection_id, user_pk in due:
                        _renew(pipe, user_pk, connection_id, expires)
                    await pipe.execute()
            except Exception:  # Redis away: the next round tries again
                logger.warning("presence heartbeat failed", exc_info=True)


def track(user_pk, connection_id: str) -> None:
    """Keeps this socket's heartbeat renewed (every ``HEARTBEAT`` seconds) until :func:`untrack`."""
    loop = id(asyncio.get_running_loop())
    renewer = _renewers.get(loop)
    if renewer is None:
        renewer = _renewers[loop] = _Renewer()
    renewer.add(user_pk, connection_id)


def untrack(connection_id: str) -> None:
    renewer = _renewers.get(id(asyncio.get_running_loop()))
    if renewer is not None:
        renewer.discard(connection_id)


async def connection_close(user_pk, connection_id: str) -> bool:
    """Forgets a socket; True when it was the user's last one (an offline transition)."""
    now = time.time()
    key = _user_key(user_pk)
    async with aclient().pipeline(transaction=True) as pipe:
        pipe.zrem(key, connection_id)
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zcard(key)
        _, _, left = await pipe.execute()
    if left == 0:
        await aclient().zrem(_users_key(), str(user_pk))
        return True
    return False


def online(user_pks) -> set:
    """The subset of ``user_pks`` with a live socket somewhere."""
    user_pks = list(user_pks)
    if not user_pks:
        return set()
    now = time.time()
    with client().pipeline(transaction=False) as pipe:
        for pk in user_pks:
            pipe.zcount(_user_key(pk), now, "+inf")
        counts = pipe.execute()
    return {pk for pk, n in zip(user_pks, counts, strict=True) if n}


async def aonline(user_pks) -> set:
    user_pks = list(user_pks)
    if not user_pks:
        return set()
    now = time.time()
    if len(user_pks) == 1:  # a direct conversation: one command, no pipeline
        return (
            set(user_pks) if await aclient().zcount(_user_key(user_pks[0]), now, "+inf") else set()
        )
    async with aclient().pipeline(transaction=False) as pipe:
        for pk in user_pks:
            pipe.zcount(_user_key(pk), now, "+inf")
        counts = await pipe.execute()
    return {pk for pk, n in zip(user_pks, counts, strict=True) if n}


def lapsed(now: float | None = None) -> list[tuple[str, float]]:
    """Users whose every heartbeat expired without a close (their process died), removed from
    the index: ``[(user pk, last heartbeat time)]``."""
    now = now or time.time()
    r = client()
    found = []
    # withscores=True answers (member, score) pairs; redis-py annotates every shape ZRANGEBYSCORE
    # can answer in.
    scored = cast(
        "list[tuple[bytes, float]]", r.zrangebyscore(_users_key(), "-inf", now, withscores=True)
    )
    for member, score in scored:
        pk = member.decode()
        key = _user_key(pk)
        r.zremrangebyscore(key, "-inf", now)
        if r.zcard(key) == 0 and r.zrem(_users_key(), member):
            found.append((pk, score - _ttl()))
    return found


def notify_claim(user_pk, conversation_id, ttl: float) -> bool:
    """True for the first message of a burst to an offline user in one conversation."""
    key = f"{_prefix()}:notify:{user_pk}:{conversation_id}"
    return bool(client().set(key, "1", nx=True, px=max(int(ttl * 1000), 1)))


def notify_release(user_pk, conversation_id) -> None:
    client().delete(f"{_prefix()}:notify:{user_pk}:{conversation_id}")
