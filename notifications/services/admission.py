"""Admission control of the send API: a send is refused (503 ``overloaded``, with
``Retry-After``) while its priority class's backlog is past the class's bound, rather than queued
behind it for ever.

The backlog of a class is its queued deliveries no worker has claimed yet; the classes are the
broker queues of :data:`notifications.enqueue.QUEUE_BY_PRIORITY` (``realtime`` for urgent,
``transactional`` for high and normal, ``bulk`` for low), each with its own bound
(``SEND_BACKLOG_MAX_*``), so that a campaign's bulk backlog never refuses an urgent or a
transactional send. A paused campaign's deliveries stay queued and count in the bulk class.

The figure is this process's own, read at most every ``SEND_BACKLOG_REFRESH_SECONDS`` by one
request while the others use the one it has. The read is one statement counting each class from
the ``delivery_backlog`` index and stopping one past the class's bound: it costs at most the
bounds (a few microseconds per queued delivery counted), however long the backlog grows, and
next to nothing while the backlog is short.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from communication.exceptions import ServiceUnavailableError
from notifications.enqueue import QUEUE_BY_PRIORITY
from notifications.models import Delivery


class OverloadedError(ServiceUnavailableError):
    """503 ``overloaded``: the backlog of the send's priority class is past its bound; the
    client comes back after ``retry_after`` seconds (the body's and the header's)."""

    default_code = "overloaded"
    default_detail = "Too many deliveries are waiting; retry later."

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def bounds() -> dict[str, int]:
    """Each priority class's bound (0: none)."""
    return {
        "realtime": settings.SEND_BACKLOG_MAX_REALTIME,
        "transactional": settings.SEND_BACKLOG_MAX_TRANSACTIONAL,
        "bulk": settings.SEND_BACKLOG_MAX_BULK,
    }


class _Figure:
    """This process's last reading of the backlog, and when it was taken."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] | None = None
        self.read_at = -math.inf


_figure = _Figure()


def _statement(classes: list[str]) -> str:
    """Counts each class of ``classes`` (its priorities, then one past its bound: two
    parameters each) in one statement, from the ``delivery_backlog`` index alone."""
    part = (
        f"(SELECT count(*) FROM (SELECT 1 FROM {Delivery._meta.db_table} "  # noqa: S608
        "WHERE status = 'queued' AND priority = ANY(%s) LIMIT %s) AS q)"
    )
    return "SELECT " + ", ".join([part] * len(classes))


def _count(limits: dict[str, int]) -> dict[str, int]:
    """Each bounded class's queued deliveries, counted up to one past its bound."""
    classes = [name for name, limit in limits.items() if limit > 0]
    if not classes:
        return {}
    params: list[Any] = []
    for name in classes:
        params += [[p for p, q in QUEUE_BY_PRIORITY.items() if q == name], limits[name] + 1]
    with connection.cursor() as cursor:
        cursor.execute(_statement(classes), params)
        row = cursor.fetchone()
    return dict(zip(classes, row, strict=True))


def backlog() -> dict[str, int]:
    """Each bounded class's backlog (capped one past its bound), at most
    ``SEND_BACKLOG_REFRESH_SECONDS`` old. The first reading of a process is waited for; later,
    one request refreshes it while the others go on with the previous one."""
    state = _figure
    if time.monotonic() - state.read_at >= settings.SEND_BACKLOG_REFRESH_SECONDS:
        if state.lock.acquire(blocking=state.counts is None):
            try:
                if time.monotonic() - state.read_at >= settings.SEND_BACKLOG_REFRESH_SECONDS:
                    state.counts = _count(bounds())
                    state.read_at = time.monotonic()
            finally:
                state.lock.release()
    return state.counts or {}


def send_admit(*, priority: str, scheduled_at: dt.datetime | None = None) -> None:
    """Raises :class:`OverloadedError` when a send of ``priority`` must be refused now: its
    class's backlog is past the class's bound. A send for later adds nothing to today's backlog
    and is let through (it is queued when its time comes)."""
    if scheduled_at is not None and (
        timezone.is_naive(scheduled_at) or scheduled_at > timezone.now()
    ):
        return
    name = QUEUE_BY_PRIORITY.get(priority)
    limit = bounds().get(name or "", 0)
    if name is None or limit <= 0:
        return
    if backlog().get(name, 0) > limit:
        raise OverloadedError(
            f"More than {limit} {priority}-priority deliveries are waiting; retry later.",
            retry_after=settings.SEND_OVERLOADED_RETRY_AFTER,
        )
