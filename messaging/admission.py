"""Admission control for the gateway's message sends: a bounded amount of work per process.

Past its capacity an event loop that takes every send makes every send wait: each one holds a
database connection, a presence lookup and a publish, and what the loop cannot finish in time
piles up in its queues, so latency grows with the overload's length while throughput falls (the
loop spends itself switching between thousands of half-done sends). Here at most
``MESSAGING_WS_MAX_INFLIGHT`` sends run at once in a process; up to ``MESSAGING_WS_MAX_QUEUED``
more wait, each at most ``MESSAGING_WS_QUEUE_WAIT`` seconds, for a slot; anything beyond is
refused at once with :class:`OverloadedError`, which the gateway answers with an ``overloaded`` error
event so that the sender learns in milliseconds and may retry (same ``client_id``: one message).

A slot is handed from the send that ends straight to the oldest waiter, so waiters are served in
order and a newcomer cannot overtake them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

from messaging import conf


class OverloadedError(Exception):
    """The process has no room for another send; ``retry_after`` is a hint, in seconds."""

    def __init__(self, retry_after: float):
        super().__init__("overloaded")
        self.retry_after = retry_after


class Admission:
    """The slots of one event loop (a process's gateway)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.refused = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self) -> None:
        limit = conf.get("MESSAGING_WS_MAX_INFLIGHT")
        if self.in_flight < limit and not self.queued:
            self.in_flight += 1
            return
        if self.queued >= conf.get("MESSAGING_WS_MAX_QUEUED"):
            self.refused += 1
            raise OverloadedError(conf.get("MESSAGING_WS_RETRY_AFTER"))
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(conf.get("MESSAGING_WS_QUEUE_WAIT")):
                await asyncio.shield(waiter)
        except TimeoutError:
            if waiter.done():  # the slot came as the time ran out: it is ours to give back
                self.release()
            else:
                waiter.cancel()
            self.refused += 1
            raise OverloadedError(conf.get("MESSAGING_WS_RETRY_AFTER")) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                waiter.cancel()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: in_flight is unchanged
                return
        self.in_flight -= 1

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds one slot for the block, or raises :class:`OverloadedError` without entering it."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()


_admissions: dict[int, Admission] = {}


def current() -> Admission:
    """The running event loop's admission (one loop per gateway process)."""
    key = id(asyncio.get_running_loop())
    admission = _admissions.get(key)
    if admission is None:
        admission = _admissions[key] = Admission()
    return admission
