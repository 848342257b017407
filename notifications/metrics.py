"""The notifications pipeline's Prometheus metrics (see ``analytics.metrics``).

Counted where they happen, in whichever process: deliveries reaching a status (the send in the
web process, the provider's answer in the worker, a provider's webhook) and the provider calls'
latency. Read at scrape time: the backlog of queued deliveries (one query), the broker's queue
lengths and the providers' circuit breakers.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator

from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from analytics import metrics
from analytics.models import LATENCY_BOUNDS_MS
from notifications import dashboard
from notifications.providers import registry

DELIVERIES = Counter(
    "notifications_deliveries",
    "Deliveries that reached a status, as their analytics events record it: at the send "
    "(queued, scheduled, suppressed, skipped, delivered for in-app), at the provider's answer "
    "(sent, delivered, failed, ambiguous) and from providers' webhooks.",
    ["channel", "provider", "status"],
)
POSSIBLY_DUPLICATE = Counter(
    "notifications_deliveries_possibly_duplicate",
    "Sends accepted by a provider after a worker died during an earlier call for the same "
    "delivery: the recipient may have the message twice (counted in the sent status as well).",
    ["channel", "provider"],
)
PROVIDER_LATENCY = Histogram(
    "notifications_provider_latency_seconds",
    "Provider calls' duration, by outcome (accepted or error).",
    ["channel", "provider", "outcome"],
    buckets=[bound / 1000 for bound in LATENCY_BOUNDS_MS if bound <= 60_000],
)
BREAKER_STATES = ("closed", "half_open", "open")
# The channels whose providers have circuit breakers (in-app has no provider).
PROVIDER_CHANNELS = ("email", "sms", "push")


def deliveries_count(statuses: Iterable[tuple[str, str, str]]) -> None:
    """Counts deliveries reaching a status: ``(channel, provider, status)`` per delivery."""
    for (channel, provider, status), n in Tally(statuses).items():
        DELIVERIES.labels(channel, provider, status).inc(n)


def deliveries_count_possibly_duplicate(sends: Iterable[tuple[str, str]]) -> None:
    """Counts possibly-duplicate sends: ``(channel, provider)`` per send."""
    for (channel, provider), n in Tally(sends).items():
        POSSIBLY_DUPLICATE.labels(channel, provider).inc(n)


def provider_call(channel: str, provider: str, latency_ms: float, *, accepted: bool) -> None:
    PROVIDER_LATENCY.labels(channel, provider, "accepted" if accepted else "error").observe(
        latency_ms / 1000
    )


@metrics.collector("notifications")
def collect() -> Iterator[Metric]:
    backlog = dashboard.backlog()
    yield GaugeMetricFamily(
        "notifications_deliveries_queued",
        f"Deliveries waiting in the queue (retries waiting for their time included), counted up "
        f"to {dashboard.COUNT_CAP + 1}.",
        value=backlog.queued,
    )
    oldest = backlog.oldest_queued_at
    yield GaugeMetricFamily(
        "notifications_oldest_queued_seconds",
        "How long the oldest queued delivery has waited (0 when none waits).",
        value=(timezone.now() - oldest).total_seconds() if oldest else 0,
    )
    depth = GaugeMetricFamily(
        "notifications_broker_queue_messages",
        "Tasks waiting in each Celery queue (absent when the broker did not answer).",
        labels=["queue"],
    )
    for queue, length in dashboard.broker_queue_lengths().items():
        if length is not None:
            depth.add_metric([queue], length)
    yield depth
    breakers = GaugeMetricFamily(
        "notifications_provider_breaker_state",
        "Each provider's circuit breaker: 1 for its current state, 0 for the others.",
        labels=["channel", "provider", "state"],
    )
    for channel in PROVIDER_CHANNELS:
        for provider in registry.chain(channel):
            if provider.alias == "outbox":  # the development outbox has no breaker
                continue
            state = registry.provider_breaker(provider.alias).state()
            for candidate in BREAKER_STATES:
                breakers.add_metric(
                    [channel, provider.alias, candidate], 1.0 if candidate == state else 0.0
                )
    yield breakers
