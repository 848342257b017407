"""Hands delivery ids to the broker: one ``deliver_many`` task per queue for what a process
committed within ``DELIVERY_ENQUEUE_LINGER_MS``.

A broker message per request cost the web process more than the rest of the request, and gave
the worker batches of one (a claim, a breaker check and a flush for every delivery). Here the
commit hook only appends ids to this process's buffer; a thread publishes the buffer once it is
``DELIVERY_ENQUEUE_LINGER_MS`` old or holds a task's worth of ids of one queue
(``DELIVERY_BATCH_SIZE``; ``BULK_DELIVERY_BATCH_SIZE`` on the bulk queue, so that a campaign's
task fills a provider's batch call).

What the buffer holds when the process dies is not lost: those deliveries are committed as
``queued``, and the sweep enqueues a queued delivery nobody picked up (DESIGN.md, "The delivery
pipeline" 5). With a linger of 0 every call publishes at once, in the caller's thread.
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


def publish(by_queue: dict[str, list[str]], countdown: float = 0) -> None:
    """One ``deliver_many`` task per broker queue and per :func:`batch_size` ids, now."""
    for name, ids in by_queue.items():
        size = batch_size(name)
        for start in range(0, len(ids), size):
            app.send_task(
                DELIVER_MANY,
                (ids[start : start + size],),
                queue=name,
                countdown=countdown or None,
                ignore_result=True,
            )


class _Buffer:
    """This process's ids waiting to be published, and the thread that publishes them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.pending: dict[str, list[str]] = {}
        self.oldest = 0.0
        self.pid = 0
        self.thread: threading.Thread | None = None

    def add(self, by_queue: dict[str, list[str]]) -> None:
        with self.lock:
            if self.pid != os.getpid():  # first use, or a forked child: its own buffer
                self.pending, self.pid = {}, os.getpid()
                self.thread = threading.Thread(
                    target=self._run, name="delivery-enqueue", daemon=True
                )
                self.thread.start()
            if not self.pending:
                self.oldest = time.monotonic()
            for name, ids in by_queue.items():
                self.pending.setdefault(name, []).extend(ids)
            self.ready.notify()

    def _take(self) -> dict[str, list[str]]:
        """Waits until the buffer is due, then empties it."""
        with self.lock:
            while True:
                if self.pending:
                    linger = settings.DELIVERY_ENQUEUE_LINGER_MS / 1000
                    left = self.oldest + linger - time.monotonic()
                    full = any(len(ids) >= batch_size(q) for q, ids in self.pending.items())
                    if left <= 0 or full:
                        taken, self.pending = self.pending, {}
                        return taken
                    self.ready.wait(left)
                else:
                    self.ready.wait()

    def _run(self) -> None:
        while True:
            taken = self._take()
            try:
                publish(taken)
            except Exception:
                # The deliveries stay queued in the database: the sweep enqueues them.
                logger.exception(
                    "publishing deliveries failed; the sweep will enqueue them",
                    extra={"deliveries": sum(len(ids) for ids in taken.values())},
                )

    def flush(self) -> None:
        """Publishes what is waiting now (at exit)."""
        with self.lock:
            if self.pid != os.getpid():
                return
            taken, self.pending = self.pending, {}
        if taken:
            publish(taken)


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
