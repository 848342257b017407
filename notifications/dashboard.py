"""Reads behind the staff console's dashboard and provider health page (selectors).

Today they aggregate the deliveries and the events themselves, each on an index that covers it
(``notifications/0006_console_indexes``, ``analytics/0002_console_indexes``); the Analytics rollups
will replace the bodies of these functions, not their callers. Every function is a fixed number
of queries whatever the volume: counts that could grow without bound are capped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import TruncDate
from django.utils import timezone
from kombu.exceptions import KombuError

from analytics.models import Event
from communication import celery
from notifications.models import Delivery

logger = logging.getLogger(__name__)

# A provider call is recorded as one event with its latency, whatever the outcome (a chain given
# up after its last retry adds a "failed" event without one: not a call). The failed calls are
# those of analytics' ``event_provider_errors`` index.
ERROR_EVENTS = ("retry", "failed", "ambiguous")
# Counting a backlog of millions would cost more than the page; past this it reads "10,000+".
COUNT_CAP = 10_000
# A broker that does not answer within this many seconds is shown as unknown.
BROKER_TIMEOUT = 1.0


@dataclass(frozen=True)
class DayCount:
    day: dt.date
    channel: str
    status: str
    count: int


def sends_by_day(*, days: int = 7) -> list[DayCount]:
    """Deliveries created on each of the last ``days`` days (today included, in the site's time
    zone), by channel and current status."""
    start = _midnight(timezone.localdate() - dt.timedelta(days=days - 1))
    rows = (
        Delivery.objects.filter(created_at__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values_list("day", "channel", "status")
        .annotate(n=Count("*"))
        .order_by()
    )
    return [DayCount(day, channel, status, n) for day, channel, status, n in rows]


@dataclass(frozen=True)
class FailureReason:
    channel: str
    reason: str
    count: int
    last_at: dt.datetime


def failure_reasons(*, since: dt.datetime, limit: int = 6) -> list[FailureReason]:
    """The most frequent reasons deliveries failed since ``since``, by channel."""
    rows = (
        Event.objects.filter(type="failed", occurred_at__gte=since)
        .annotate(reason=KeyTextTransform("reason", "data"))
        .values_list("channel", "reason")
        .annotate(n=Count("*"), last_at=Max("occurred_at"))
        .order_by("-n", "-last_at")[:limit]
    )
    return [FailureReason(channel, reason or "", n, last) for channel, reason, n, last in rows]


@dataclass(frozen=True)
class ProviderStats:
    channel: str
    provider: str
    calls: int
    succeeded: int
    p95_ms: float | None
    last_error: str
    last_error_at: dt.datetime | None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.calls if self.calls else None


def provider_stats(*, since: dt.datetime) -> list[ProviderStats]:
    """Each (channel, provider) that was called since ``since``: calls, successes, p95 latency
    and the last error. One query: the calls from their covering index, then each pair's last
    error from the index of failed calls, one probe per pair. (Raw SQL: the ORM would group by
    the last-error subquery too, running it once per call instead of once per provider.)"""
    table = Event._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT c.channel, c.provider, c.calls, c.succeeded, c.p95, e.data, e.occurred_at
            FROM (
                SELECT channel, provider, count(*) AS calls,
                    count(*) FILTER (WHERE type = 'sent') AS succeeded,
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95
                FROM {table}
                WHERE occurred_at >= %(since)s AND latency_ms IS NOT NULL AND provider <> ''
                GROUP BY channel, provider
            ) AS c
            LEFT JOIN LATERAL (
                SELECT data, occurred_at FROM {table}
                WHERE channel = c.channel AND provider = c.provider
                    AND type = ANY(%(errors)s) AND latency_ms IS NOT NULL
                    AND occurred_at >= %(since)s
                ORDER BY occurred_at DESC
                LIMIT 1
            ) AS e ON true
            """,  # noqa: S608 - the table's name is ours
            {"since": since, "errors": list(ERROR_EVENTS)},
        )
        rows = cursor.fetchall()
    # Django's PostgreSQL backend hands jsonb over as text, for JSONField to decode.
    return [
        ProviderStats(
            channel, provider, n, ok, p95, _error_text(json.loads(data)) if data else "", at
        )
        for channel, provider, n, ok, p95, data, at in rows
    ]


def _error_text(data: dict[str, Any]) -> str:
    return str(data.get("error") or data.get("detail") or data.get("reason") or "")


@dataclass(frozen=True)
class Backlog:
    queued: int  # at most COUNT_CAP + 1
    oldest_queued_at: dt.datetime | None

    @property
    def capped(self) -> bool:
        return self.queued > COUNT_CAP


def backlog() -> Backlog:
    """Deliveries waiting in ``queued`` (a retry waiting for its time included) and since when the
    oldest has waited; one query on the partial index of queued deliveries."""
    table = Delivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT count(*) FROM (SELECT 1 FROM {table} WHERE status = 'queued' "  # noqa: S608
            f"LIMIT %s) AS capped), "
            f"(SELECT min(updated_at) FROM {table} WHERE status = 'queued')",
            [COUNT_CAP + 1],
        )
        queued, oldest = cursor.fetchone()
    return Backlog(queued, oldest)


def due_soon(*, within: dt.timedelta, limit: int = 8) -> tuple[list[Delivery], int]:
    """Scheduled deliveries due within ``within`` (those overdue included), the earliest first,
    with their notification; and how many there are (at most COUNT_CAP + 1). Two queries, whatever
    the number."""
    due = Delivery.objects.filter(status="scheduled", scheduled_for__lte=timezone.now() + within)
    first = list(
        due.select_related("notification")
        .only(
            "id",
            "channel",
            "address",
            "scheduled_for",
            "notification__id",
            "notification__category_id",
            "notification__title",
        )
        .order_by("scheduled_for")[:limit]
    )
    return first, _capped_count(due)


def _capped_count(qs: QuerySet[Delivery]) -> int:
    return qs.order_by().values("id")[: COUNT_CAP + 1].count()


def broker_queue_lengths() -> dict[str, int | None]:
    """Messages waiting in each of our Celery queues (``None``: the broker did not answer).

    A passive declare reads a queue's length without creating it: on Redis the sum of the
    queue's lists (one per priority), on RabbitMQ the broker's count. A queue that does not
    exist holds nothing (Redis drops an empty list).
    """
    names = [celery.queue(name) for name in settings.QUEUE_NAMES]
    found = _broker.lengths(names)
    if found is None:
        return dict.fromkeys(settings.QUEUE_NAMES)
    return dict(zip(settings.QUEUE_NAMES, found, strict=True))


class _BrokerReader:
    """This process's connection for reading queue lengths, kept from one page to the next:
    opening one (a TCP connection and a handshake per channel) cost the dashboard more than all
    its SQL. Opened on first use, and again when the broker's URL changes or the connection
    breaks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.url = ""
        self.conn: Any = None
        self.channel: Any = None

    def lengths(self, queues: list[str]) -> list[int] | None:
        with self.lock:
            if self.url != settings.CELERY_BROKER_URL:
                self.close()
            # A connection kept from an earlier page may have broken since: one fresh try.
            for kept in (self.conn is not None, False):
                try:
                    if self.conn is None:
                        self.open()
                    return [self.length(queue) for queue in queues]
                except self.errors() as exc:
                    self.close()
                    if not kept:
                        logger.warning(
                            "broker unavailable for queue lengths", extra={"error": str(exc)}
                        )
            return None

    def open(self) -> None:
        self.url = settings.CELERY_BROKER_URL
        self.conn = celery.app.connection_for_read(
            self.url,
            connect_timeout=BROKER_TIMEOUT,
            transport_options={
                "socket_timeout": BROKER_TIMEOUT,
                "socket_connect_timeout": BROKER_TIMEOUT,
                "max_retries": 0,
            },
        )
        self.conn.ensure_connection(max_retries=0)
        self.channel = self.conn.channel()

    def length(self, queue: str) -> int:
        try:
            return int(self.channel.queue_declare(queue=queue, passive=True).message_count)
        except self.conn.channel_errors:
            # RabbitMQ closes the channel that asked for a missing queue; Redis keeps it open.
            if getattr(self.channel, "closed", False) or not getattr(self.channel, "is_open", True):
                self.channel = self.conn.channel()
            return 0

    def errors(self) -> tuple[type[BaseException], ...]:
        # Redis' errors are neither OSError nor kombu's: each transport names its own.
        if self.conn is None:
            return (OSError, KombuError)
        return (OSError, KombuError, *self.conn.connection_errors, *self.conn.channel_errors)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.release()
            except Exception:  # a broken connection may fail to close: it is dropped anyway
                logger.debug("broker connection did not close cleanly")
        self.conn = self.channel = None


_broker = _BrokerReader()


def _midnight(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time()))
