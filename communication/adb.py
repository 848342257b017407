"""PostgreSQL from the event loop, for the gateway's hot path (a websocket ``message.send``).

Django's ORM runs on threads: every call hands the GIL between the event loop and a thread once
per round trip, and under load each hand-off waits for the loop's switch interval. Here a
psycopg ``AsyncConnectionPool`` (one per event loop, autocommit, statements prepared once per
connection) runs written-out single statements on the loop itself. Settings come from Django's
database connection, so tests and the embedded server are reached the same way.
"""

from __future__ import annotations

import asyncio
import os

import psycopg
from django.conf import settings
from django.db import connection
from psycopg import AsyncConnection, OperationalError
from psycopg_pool import AsyncConnectionPool

from communication import dboutage

# How long the retry after a broken connection, or an outage's probe, waits for a connection.
RETRY_WAIT = 2.0

_pools: dict[tuple[int, str], AsyncConnectionPool] = {}
_flushers: dict[int, _Flusher] = {}


def _params(*, synchronous_commit: bool) -> dict:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)  # Django's client-side binding cursor: not for prepare
    # Django passes prepare_threshold=None, which turns prepared statements off altogether (even
    # ``prepare=True``): every send would be planned again, most of its cost in PostgreSQL.
    params.pop("prepare_threshold", None)
    params["autocommit"] = True
    # Named, so that pg_stat_activity tells the loop's connections from the threads' ones.
    params["application_name"] = f"communication-loop-{os.getpid()}"
    if not synchronous_commit:
        params["options"] = f"{params.get('options', '')} -c synchronous_commit=off".strip()
    return params


async def _pool(kind: str = "statements") -> AsyncConnectionPool:
    """``statements``: the pool :func:`fetchall` runs on; ``flush``: :func:`durable`'s one
    connection, which commits synchronously."""
    key = (id(asyncio.get_running_loop()), kind)
    pool = _pools.get(key)
    if pool is None:
        # The statements' pool is full from the start: one that grew under load opened its
        # connections (a new backend, its catalog caches cold) exactly when sends were queueing.
        size = settings.DB_ASYNC_POOL_MAX_SIZE if kind == "statements" else 1
        pool = AsyncConnectionPool(
            kwargs=_params(synchronous_commit=kind == "flush"),
            connection_class=AsyncConnection,
            min_size=size,
            max_size=size,
            timeout=settings.DB_POOL_TIMEOUT,
            # Give up reconnecting (backing off) soon, then connect again when a send needs it.
            reconnect_timeout=settings.DB_POOL_RECONNECT_TIMEOUT,
            open=False,
        )
        _pools[key] = pool
        await pool.open()
    return pool


async def fetchall(sql: str, params) -> list[tuple]:
    """Runs one statement (prepared on each connection the first time) and returns its rows.
    It is committed when this returns, and durable once :func:`durable` has returned after it.

    A connection found broken (the server restarted, say) leaves the pool and the statement
    runs once more on another: the statements run here are idempotent (a message replays on
    its ``client_id``, watermarks only move forward)."""
    return await _run(await _pool(), sql, params, prepare=True)


async def _run(pool: AsyncConnectionPool, sql: str, params, *, prepare: bool) -> list[tuple]:
    # While the database is known unreachable this fails at once (communication.dboutage), as
    # the threads' connections do; the probe of an outage waits for a connection only briefly.
    probing = dboutage.admit()
    try:
        rows = await _attempts(pool, sql, params, prepare=prepare, probing=probing)
    except BaseException as exc:
        if dboutage.is_outage(exc) or (probing and not isinstance(exc, psycopg.Error)):
            dboutage.failed()
        elif probing:
            dboutage.succeeded()  # the server answered: the statement itself failed
        raise
    dboutage.succeeded()
    return rows


async def _attempts(pool, sql: str, params, *, prepare: bool, probing: bool) -> list[tuple]:
    for attempt in (1, 2):
        try:
            # The retry after a broken connection waits briefly too, not the pool's timeout.
            wait = RETRY_WAIT if probing or attempt == 2 else None
            async with pool.connection(timeout=wait) as conn:
                cursor = await conn.execute(sql, params, prepare=prepare)
                return await cursor.fetchall() if cursor.description else []
        except OperationalError:
            if attempt == 2:
                raise
            await pool.check()  # the others were likely dropped too: replace them all
    raise AssertionError("unreachable")


async def durable() -> None:
    """Returns once everything this process committed before the call is on disk.

    One flush serves every caller waiting when it starts: a one-row write commits
    synchronously, and PostgreSQL's flush of its commit record covers all the WAL written before
    it. Callers that arrive while a flush runs wait for the next one."""
    loop = id(asyncio.get_running_loop())
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _Flusher()
    await flusher.flush()


# A commit that wrote no other WAL does not wait for the disk (PostgreSQL's RecordTransactionCommit):
# the row written is what makes this one wait, and its flush covers all WAL before it.
_FLUSH = (
    "INSERT INTO communication_walflush (slot, flushes) VALUES (%(slot)s, 1) "
    "ON CONFLICT (slot) DO UPDATE SET flushes = communication_walflush.flushes + 1"
)


class _Flusher:
    def __init__(self):
        self.waiting: asyncio.Future | None = None  # the callers of the next flush
        self.task: asyncio.Task | None = None

    async def flush(self) -> None:
        if self.waiting is None:
            self.waiting = asyncio.get_running_loop().create_future()
        waiting = self.waiting
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._rounds())
        await asyncio.shield(waiting)

    async def _rounds(self) -> None:
        while self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            try:
                await _run(await _pool("flush"), _FLUSH, {"slot": os.getpid() % 64}, prepare=True)
            except asyncio.CancelledError:  # closing: its callers are cancelled too
                waiting.cancel()
                raise
            except Exception as exc:
                waiting.set_exception(exc)
            else:
                waiting.set_result(None)


async def close() -> None:
    """Closes this event loop's pools (tests, shutdown)."""
    loop = id(asyncio.get_running_loop())
    flusher = _flushers.pop(loop, None)
    if flusher is not None and flusher.task is not None:
        flusher.task.cancel()
    for kind in ("statements", "flush"):
        pool = _pools.pop((loop, kind), None)
        if pool is not None:
            await pool.close()
