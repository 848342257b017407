"""Prometheus metrics: the ``/metrics`` view, the HTTP metrics, and the registry of the collectors
that read figures at scrape time.

Every process (web, worker, beat) writes its counters, histograms and live gauges to files of its
own in ``PROMETHEUS_MULTIPROC_DIR``, which the settings set before anything imports
prometheus_client (its multi-process mode is chosen at import). A scrape builds a registry for
the request: the merge of those files, then what the apps' collectors read now from the database,
the cache and the broker.

Analytics imports no other app: an app registers its collector here when it loads
(``@metrics.collector("notifications")`` in its ``metrics`` module, imported by its
``AppConfig.ready``), as the staff console's panels are registered. A collector is a function
returning metric families (``prometheus_client.core.GaugeMetricFamily`` …); it runs a fixed
number of queries whatever the volume. Campaigns register their progress the same way.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from django.conf import settings
from django.core import checks
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from communication.errors import json_error
from communication.processes import pid_alive
from communication.ratelimit import client_ip

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ the HTTP metric

HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by URL pattern (route), method and status class; its "
    "_count is the number of requests.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# ------------------------------------------------------------------ collectors read at scrape time

CollectFn = Callable[[], Iterable[Metric]]
_collectors: dict[str, CollectFn] = {}


def collector(name: str) -> Callable[[CollectFn], CollectFn]:
    """Registers the decorated function as the scrape-time collector ``name``.

    The function takes nothing and returns (or yields) metric families. Registering a name again
    replaces the collector, so a module imported twice leaves one. A collector that raises is
    logged and reported as ``metrics_collector_up{collector=name} 0``; the others still answer.
    """

    def register(fn: CollectFn) -> CollectFn:
        _collectors[name] = fn
        return fn

    return register


def collectors() -> dict[str, CollectFn]:
    return dict(_collectors)


class _ScrapeCollectors:
    """Runs every registered collector once per scrape (the registry is built per request)."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "metrics_collector_up",
            "Whether a scrape-time collector answered (1) or failed (0).",
            labels=["collector"],
        )
        took = GaugeMetricFamily(
            "metrics_collector_duration_seconds",
            "How long a scrape-time collector took.",
            labels=["collector"],
        )
        for name, fn in sorted(_collectors.items()):
            started = time.perf_counter()
            try:
                families = list(fn())
            except Exception:
                logger.exception("metrics collector failed", extra={"collector": name})
                up.add_metric([name], 0)
            else:
                up.add_metric([name], 1)
                yield from families
            took.add_metric([name], time.perf_counter() - started)
        yield up
        yield took


# ----------------------------------------------------------------------------- multi-process files

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def forget_dead_processes(path: Path) -> None:
    """Drops the live gauges (open sockets …) of processes that are gone: ``serve`` does it for
    its children as they exit, this for the ones it does not see (Celery's pool processes,
    uvicorn's workers, a server not started by ``serve``)."""
    for entry in os.scandir(path):
        found = _LIVE_GAUGE_FILE.match(entry.name)
        if found and not pid_alive(int(found.group(1))):
            multiprocess.mark_process_dead(int(found.group(1)), str(path))


def render() -> bytes:
    """The text exposition: every process's metrics merged, then the scrape-time collectors."""
    path = Path(settings.PROMETHEUS_MULTIPROC_DIR)
    forget_dead_processes(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))
    registry.register(_ScrapeCollectors())
    return generate_latest(registry)


# -------------------------------------------------------------------------------------- the view


@functools.lru_cache(maxsize=8)
def _networks(
    entries: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    # The settings refuse a bad entry at start; one set later by a test or a shell is skipped.
    found = []
    for entry in entries:
        try:
            found.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            logger.error("METRICS_ALLOWED_IPS entry ignored", extra={"entry": entry})
    return tuple(found)


def _ip_allowed(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)  # a dual-stack socket's view of an IPv4 client
    return any(
        c in network for c in candidates for network in networks if c.version == network.version
    )


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read the metrics, else the error response."""
    token: str = settings.METRICS_TOKEN
    networks = _networks(tuple(settings.METRICS_ALLOWED_IPS))
    if not token and not networks:
        return json_error(
            request,
            "permission_denied",
            "Metrics are not enabled: set METRICS_TOKEN or METRICS_ALLOWED_IPS.",
            403,
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if token and scheme.lower() == "bearer" and given:
        if hmac.compare_digest(given.encode(), token.encode()):
            return None
        response = json_error(request, "token_invalid", "This token may not read the metrics.", 401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics", error="invalid_token"'
        return response
    if networks and _ip_allowed(client_ip(request), networks):
        return None
    if token:
        response = json_error(request, "token_missing", "Send the metrics bearer token.", 401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return json_error(request, "permission_denied", "This address may not read the metrics.", 403)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: Prometheus' text format, for a bearer of ``METRICS_TOKEN`` or a client
    in ``METRICS_ALLOWED_IPS``."""
    if request.method not in ("GET", "HEAD"):
        response = json_error(
            request, "method_not_allowed", f'Method "{request.method}" not allowed.', 405
        )
        response["Allow"] = "GET, HEAD"
        return response
    refused = _refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)


# ----------------------------------------------------------------------------------------- checks


@checks.register()
def check_multiprocess_mode(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """prometheus_client imported before the settings set its folder counts in this process
    alone: its figures would never reach a scrape."""
    if getattr(values.ValueClass, "_multiprocess", False):
        return []
    return [
        checks.Error(
            "prometheus_client is not in multi-process mode: it was imported before the settings "
            "set PROMETHEUS_MULTIPROC_DIR.",
            hint="Import prometheus_client only after Django's settings are loaded.",
            id="analytics.E001",
        )
    ]
