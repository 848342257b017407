"""The realtime gateway's Prometheus metrics (see ``analytics.metrics``): open sockets.

Nothing else counts the sockets a process holds (presence counts users, in Redis, across
processes), so each process keeps its own count in a live gauge that a scrape sums; a process that
dies leaves the sum (``serve`` and the scrape drop its file).
"""

from __future__ import annotations

from prometheus_client import Gauge

WEBSOCKET_CONNECTIONS = Gauge(
    "messaging_websocket_connections",
    "Authenticated gateway websockets open now, all processes together.",
    multiprocess_mode="livesum",
)
# A process whose pid an earlier one had, and whose file is still there, starts from nothing.
WEBSOCKET_CONNECTIONS.set(0)


async def on_connect(consumer) -> None:
    WEBSOCKET_CONNECTIONS.inc()


async def on_disconnect(consumer) -> None:
    WEBSOCKET_CONNECTIONS.dec()
