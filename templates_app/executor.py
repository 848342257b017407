"""The executor every render runs on: a few threads of its own, and a bounded queue.

A request thread that renders (a preview, a render, a send's in-app body) hands the render to
these threads and waits for it at most the render's time limit (plus a grace for the step that
was running when the deadline passed). Renders beyond the executor's threads wait in its queue;
beyond the queue a render is refused at once (``503 render_busy``). So hostile renders queue
behind each other and hold at most ``TEMPLATES_RENDER_THREADS + TEMPLATES_RENDER_QUEUE`` request
threads, whatever they do, while the other ``WEB_THREADS`` keep answering.

The engine bounds each step of a render by construction (:mod:`templates_app.engine`); this
bounds how long anyone waits for a render whose step overran anyway: the caller gets its
``render_limit`` answer and the abandoned render stops at its next deadline check, holding its
place in the executor until then.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, TypeVar

from django.conf import settings

from templates_app import errors

T = TypeVar("T")

# Long enough for a burst of ordinary renders (a few milliseconds each) to make room, short
# enough that a full executor holds request threads only briefly before answering 503.
ADMISSION_WAIT = 0.1


def _grace(time_limit: float) -> float:
    """How long past its limit a render may take: the step running at the deadline finishes."""
    return min(1.0, 0.5 + time_limit / 2)


class RenderExecutor:
    """``threads`` render threads and room for ``queue`` more renders waiting for one."""

    def __init__(self, threads: int, queue: int) -> None:
        self.threads = max(1, threads)
        self.queue = max(0, queue)
        self.capacity = self.threads + self.queue
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self._pending = 0
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="render")
        self._local = threading.local()

    def run(self, fn: Callable[..., T], time_limit: float, /, **kwargs: Any) -> T:
        """``fn(**kwargs)`` on a render thread; see the module docstring for what it raises."""
        if getattr(self._local, "inside", False):  # a render that renders: no second hop
            return fn(**kwargs)
        if not self._slots.acquire(timeout=ADMISSION_WAIT):
            raise errors.RenderBusyError()
        with self._lock:
            self._pending += 1
        started: list[float] = []

        def job() -> T:
            started.append(time.monotonic())
            self._local.inside = True
            try:
                return fn(**kwargs)
            finally:
                self._local.inside = False
                self._release()

        # The caller's context (its request id for the logs) travels with the render.
        future = self._executor.submit(contextvars.copy_context().run, job)
        budget = time_limit + _grace(time_limit)
        # Each render ahead in the queue ends within its budget: past that, something is wrong.
        queue_until = time.monotonic() + (1 + self.queue // self.threads) * budget
        while True:
            wait = budget if not started else started[0] + budget - time.monotonic()
            try:
                return future.result(timeout=max(0.0, wait))
            except FutureTimeoutError:
                pass
            if started:
                if time.monotonic() >= started[0] + budget:
                    raise errors.RenderLimitError(
                        f"The template took longer than {time_limit:g} s to render."
                    )
            elif time.monotonic() >= queue_until and future.cancel():
                self._release()
                raise errors.RenderBusyError()

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1
        self._slots.release()

    def stats(self) -> dict[str, int]:
        """Renders running or waiting now (``pending``) out of ``capacity``."""
        with self._lock:
            pending = self._pending
        return {"threads": self.threads, "capacity": self.capacity, "pending": pending}


_executor: tuple[int, RenderExecutor] | None = None
_executor_lock = threading.Lock()


def get() -> RenderExecutor:
    """This process's executor, made on first use (and again in a forked child, whose copy of
    the parent's threads does not run)."""
    global _executor  # noqa: PLW0603  (one per process, made lazily)
    current = _executor
    if current is not None and current[0] == os.getpid():
        return current[1]
    with _executor_lock:
        if _executor is None or _executor[0] != os.getpid():
            made = RenderExecutor(
                settings.TEMPLATES_RENDER_THREADS, settings.TEMPLATES_RENDER_QUEUE
            )
            _executor = (os.getpid(), made)
        return _executor[1]


def run(fn: Callable[..., T], time_limit: float, /, **kwargs: Any) -> T:
    """``fn(**kwargs)`` on this process's render executor."""
    return get().run(fn, time_limit, **kwargs)


def stats() -> dict[str, int]:
    return get().stats()
