"""The event loop's PostgreSQL statements: committed without waiting for the disk, and
``durable()`` waits for it."""

from __future__ import annotations

import asyncio

import pytest

from communication import adb

pytestmark = pytest.mark.django_db


def run(scenario):
    async def closing():
        try:
            return await scenario()
        finally:
            await adb.close()

    return asyncio.run(closing())


def test_statements_commit_without_waiting_for_the_disk():
    async def scenario():
        return await adb.fetchall("SHOW synchronous_commit", None)

    assert run(scenario) == [("off",)]


def test_durable_returns_once_what_was_committed_before_it_is_on_disk():
    async def one_commit() -> float:
        await adb.fetchall("SELECT pg_current_xact_id()", None)  # commits a transaction id
        [(written,)] = await adb.fetchall("SELECT pg_current_wal_insert_lsn()::text", None)
        await adb.durable()
        [(gap,)] = await adb.fetchall(
            "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), %s::pg_lsn)", [written]
        )
        return gap

    async def scenario():
        one_by_one = [await one_commit() for _ in range(10)]
        # Callers waiting together share flushes; each still returns only once it is covered.
        together = await asyncio.gather(*(one_commit() for _ in range(30)))
        return one_by_one + list(together)

    gaps = run(scenario)
    assert all(gap >= 0 for gap in gaps), gaps
