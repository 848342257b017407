"""The realtime gateway's Prometheus metrics (see ``analytics.metrics``): open sockets.

Nothing else counts the sockets a process holds (presence counts users, in Redis, across
processes), so each process keeps its own count in a live gauge that a scrape sums; the file of a
process that died is dropped (by ``serve`` as its child exits, else by the next scrape).
"""

from __future__ import annotations

import functools

from prometheus_client import Gauge


@functools.cache
def websocket_connections() -> Gauge:
    """The gauge, made by the first socket: a process that never holds one (a worker, a
    management command) leaves no file behind."""
    gauge = Gauge(
        "messaging_websocket_connections",
        "Authenticated gateway websockets open now, all processes together.",
        multiprocess_mode="livesum",
    )
    # A process that reuses the pid of one whose file is still there starts from nothing.
    gauge.set(0)
    return gauge


async def on_connect(consumer) -> None:
    websocket_connections().inc()


async def on_disconnect(consumer) -> None:
    websocket_connections().dec()
