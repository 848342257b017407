"""Hands delivery ids to the broker: one ``deliver_many`` task per queue for what a process
committed within ``DELIVERY_ENQUEUE_LINGER_MS``.

A broker message per request cost the web process more than the rest of the request, and gave
the worker batches of one (a claim, a breaker check and a flush for every delivery). Here the
commit hook only appends ids to this process's buffer; a thread publishes the buffer once it is
``DELIVERY_ENQUEUE_LINGER_MS`` old or holds a task's worth of ids of one queue
(``DELIVERY_BATCH_SIZE``; ``BULK_DELIVERY_BATCH_SIZE`` on the bulk queue, so that a campaign's
task fills a provider's batch call).

A publish the broker refuses is kept and tried again with a growing wait (:class:`_Buffer`), so
that a broker restart costs seconds, never a caller's error. What the buffer holds when the
process dies is not lost: those deliveries are committed as ``queued``, and the sweep enqueues a
queued delivery nobody picked up (DESIGN.md, "The delivery pipeline" 5). With a linger of 0
every call publishes at once, in the caller's thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from django.conf import settings

from communication.celery import app, queue

logger = logging.getLogger(__name__)

DELIVERY_BATCH_SIZE = 50
# A bulk task is as large as the largest provider batch call (SendGrid's personalizations): the
# worker renders it, sends it in one call, records it in one flush. Its lease guard
# (``DELIVERY_LEASE_SECONDS / 2``) puts back what a slow relay has not reached by then.
BULK_DELIVERY_BATCH_SIZE = 1000

# Published by name: the task's module imports the services, which import this module.
DELIVER_MANY = "notifications.tasks.deliver_many"

QUEUE_BY_PRIORITY = {
    "urgent": "realtime",
    "high": "transactional",
    "normal": "transactional",
    "low": "bulk",
}


def batch_size(name: str) -> int:
    """How many delivery ids one task of the broker queue ``name`` carries."""
    return BULK_DELIVERY_BATCH_SIZE if name == queue("bulk") else DELIVERY_BATCH_SIZE


# A chunk: one task's worth of ids of one broker queue, and when it is due (``time.time()``; 0:
# at once).
Chunk = tuple[str, list[str], float]

# What a process keeps of a failed publish while the broker is away (ids): about 10 MB. Past it,
# the oldest are let go: they are committed as queued, and the sweep publishes them again.
BUFFER_MAX_IDS = 100_000
# The wait between two tries of a failed publish doubles from the first to the last.
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 2.0


def _chunks(by_queue: dict[str, list[str]], due: float = 0) -> list[Chunk]:
    return [
        (name, ids[start : start + batch_size(name)], due)
        for name, ids in by_queue.items()
        for start in range(0, len(ids), batch_size(name))
    ]


def _publish(chunks: list[Chunk]) -> tuple[list[Chunk], Exception | None]:
    """Publishes ``chunks`` in order, one ``deliver_many`` task each; when the broker refuses
    one, returns it and those after it, with the error (raises nothing)."""
    for n, (name, ids, due) in enumerate(chunks):
        countdown = max(due - time.time(), 0) if due else 0
        try:
            app.send_task(
                DELIVER_MANY,
                (ids,),
                queue=name,
                countdown=countdown or None,
                ignore_result=True,
            )
        except Exception as exc:
            return chunks[n:], exc
    return [], None


def publish(by_queue: dict[str, list[str]], countdown: float = 0) -> None:
    """One ``deliver_many`` task per broker queue and per :func:`batch_size` ids, now; what the
    broker refuses is kept and tried again by this process's publisher (see :class:`_Buffer`)."""
    left, error = _publish(_chunks(by_queue, time.time() + countdown if countdown else 0))
    if left:
        _buffer.retry(left, error)


class _Buffer:
    """This process's ids waiting to be published, and the thread that publishes them.

    A publish the broker refuses (it restarts, the network is cut) is kept, ahead of what came
    since, and tried again after a wait that doubles up to ``RETRY_MAX_SECONDS``: a broker back
    within seconds gets its deliveries within seconds, not at the sweep's horizon. An outage is
    logged once when it starts and once when it ends; past ``BUFFER_MAX_IDS`` the oldest ids are
    let go to the sweep."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.pending: dict[str, list[str]] = {}
        self.oldest = 0.0
        self.pid = 0
        self.thread: threading.Thread | None = None
        # Chunks a publish left, the time of their next try, and the wait after that one.
        self.retrying: list[Chunk] = []
        self.retry_at = 0.0
        self.backoff = RETRY_FIRST_SECONDS
        self.failing_since = 0.0
        self.dropped = 0

    def _start(self) -> None:
        """Called with the lock held: a process's first use, or a forked child's."""
        if self.pid != os.getpid():
            self.pending, self.retrying, self.pid = {}, [], os.getpid()
            self.retry_at, self.backoff, self.failing_since = 0.0, RETRY_FIRST_SECONDS, 0.0
            self.thread = threading.Thread(target=self._run, name="delivery-enqueue", daemon=True)
            self.thread.start()

    def add(self, by_queue: dict[str, list[str]]) -> None:
        with self.lock:
            self._start()
            if not self.pending:
                self.oldest = time.monotonic()
            for name, ids in by_queue.items():
                self.pending.setdefault(name, []).extend(ids)
            self.ready.notify()

    def retry(self, chunks: list[Chunk], error: Exception | None) -> None:
        """Keeps ``chunks``, which the broker refused, to try them again after the wait."""
        with self.lock:
            self._start()
            now = time.monotonic()
            if not self.failing_since:
                self.failing_since = now
                logger.warning(
                    "publishing deliveries failed; retrying until the broker is back",
                    exc_info=error,
                    extra={"deliveries": sum(len(ids) for _, ids, _ in chunks)},
                )
            self.retrying = chunks + self.retrying
            self.retry_at = now + self.backoff
            self.backoff = min(self.backoff * 2, RETRY_MAX_SECONDS)
            self._bound()
            self.ready.notify()

    def _bound(self) -> None:
        """Lets the oldest kept ids go past ``BUFFER_MAX_IDS`` (the sweep publishes them)."""
        held = sum(len(ids) for _, ids, _ in self.retrying)
        held += sum(len(ids) for ids in self.pending.values())
        while held > BUFFER_MAX_IDS and self.retrying:
            _, ids, _ = self.retrying.pop(0)  # the oldest: nearest to the sweep's horizon
            held -= len(ids)
            if not self.dropped:
                logger.warning(
                    "too many deliveries waiting for the broker; the oldest are left to the sweep"
                )
            self.dropped += len(ids)

    def _take(self) -> list[Chunk]:
        """Waits until the buffer is due (and a failed publish's wait is over), then empties it."""
        with self.lock:
            while True:
                now = time.monotonic()
                if self.retrying or self.pending:
                    if now < self.retry_at:
                        self.ready.wait(self.retry_at - now)
                        continue
                    linger = settings.DELIVERY_ENQUEUE_LINGER_MS / 1000
                    left = self.oldest + linger - now
                    full = any(len(ids) >= batch_size(q) for q, ids in self.pending.items())
                    if self.retrying or left <= 0 or full or not self.pending:
                        taken = self.retrying + _chunks(self.pending)
                        self.retrying, self.pending = [], {}
                        return taken
                    self.ready.wait(left)
                else:
                    self.ready.wait()

    def _run(self) -> None:
        while True:
            taken = self._take()
            left, error = _publish(taken)
            if left:
                self.retry(left, error)
            elif self.failing_since:
                with self.lock:
                    if not self.retrying:
                        logger.info(
                            "publishing deliveries resumed",
                            extra={
                                "seconds": round(time.monotonic() - self.failing_since, 1),
                                "left_to_the_sweep": self.dropped,
                            },
                        )
                        self.failing_since, self.dropped = 0.0, 0
                        self.backoff = RETRY_FIRST_SECONDS

    def flush(self) -> None:
        """Publishes what is waiting now (at exit); what the broker refuses is the sweep's."""
        with self.lock:
            if self.pid != os.getpid():
                return
            taken = self.retrying + _chunks(self.pending)
            self.retrying, self.pending = [], {}
        if taken and (left := _publish(taken)[0]):
            logger.warning(
                "publishing deliveries failed at exit; the sweep will enqueue them",
                extra={"deliveries": sum(len(ids) for _, ids, _ in left)},
            )


_buffer = _Buffer()
atexit.register(_buffer.flush)


def enqueue_many(items: list[tuple[str, str]], countdown: float = 0) -> None:
    """Hands ``(delivery id, priority)`` pairs to the workers: buffered for up to
    ``DELIVERY_ENQUEUE_LINGER_MS`` (see the module's docstring); delayed ones (``countdown``)
    are published at once."""
    by_queue: dict[str, list[str]] = {}
    for delivery_id, priority in items:
        name = queue(QUEUE_BY_PRIORITY.get(priority, "default"))  # the broker's name, now
        by_queue.setdefault(name, []).append(str(delivery_id))
    if not by_queue:
        return
    if countdown or settings.DELIVERY_ENQUEUE_LINGER_MS <= 0:
        publish(by_queue, countdown)
    else:
        _buffer.add(by_queue)
