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

from django.conf import settings
from django.db import connection
from psycopg import AsyncConnection, OperationalError
from psycopg_pool import AsyncConnectionPool

_pools: dict[int, AsyncConnectionPool] = {}


def _params() -> dict:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)  # Django's client-side binding cursor: not for prepare
    # Django passes prepare_threshold=None, which turns prepared statements off altogether (even
    # ``prepare=True``): every send would be planned again, most of its cost in PostgreSQL.
    params.pop("prepare_threshold", None)
    params["autocommit"] = True
    # Named, so that pg_stat_activity tells the loop's connections from the threads' ones.
    params["application_name"] = f"communication-loop-{os.getpid()}"
    return params


async def _pool() -> AsyncConnectionPool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(id(loop))
    if pool is None:
        pool = AsyncConnectionPool(
            kwargs=_params(),
            connection_class=AsyncConnection,
            min_size=1,
            max_size=settings.DB_ASYNC_POOL_MAX_SIZE,
            timeout=settings.DB_POOL_TIMEOUT,
            open=False,
        )
        _pools[id(loop)] = pool
        await pool.open()
    return pool


async def fetchall(sql: str, params) -> list[tuple]:
    """Runs one statement (prepared on each connection the first time) and returns its rows.

    A connection found broken (the server restarted, say) leaves the pool and the statement
    runs once more on another: the statements run here are idempotent (a message replays on
    its ``client_id``, watermarks only move forward)."""
    pool = await _pool()
    for attempt in (1, 2):
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(sql, params, prepare=True)
                return await cursor.fetchall() if cursor.description else []
        except OperationalError:
            if attempt == 2:
                raise
            await pool.check()  # the others were likely dropped too: replace them all
    raise AssertionError("unreachable")


async def close() -> None:
    """Closes this event loop's pool (tests, shutdown)."""
    pool = _pools.pop(id(asyncio.get_running_loop()), None)
    if pool is not None:
        await pool.close()
