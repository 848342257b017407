"""The Celery application: ``celery -A communication worker|beat``.

Queues: ``realtime`` (websocket-adjacent, user is waiting), ``transactional`` (one-off sends),
``bulk`` (campaign fan-out), ``default`` (sweeps, rollups, housekeeping).
"""

from __future__ import annotations

import os

from celery import Celery, signals
from django.conf import settings
from django.db import close_old_connections
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")

app = Celery("communication")
app.config_from_object("django.conf:settings", namespace="CELERY")


def queue(name: str) -> str:
    """The broker's name of one of our queues (with ``CELERY_QUEUE_PREFIX``)."""
    return f"{settings.CELERY_QUEUE_PREFIX}{name}"


def queue_list(*, exclude: tuple[str, ...] = ()) -> str:
    """Our queues' broker names, comma-separated (a worker's ``-Q``), but those in ``exclude``."""
    return ",".join(queue(n) for n in settings.QUEUE_NAMES if n not in exclude)


app.conf.task_queues = [
    Queue(f"{os.environ.get('CELERY_QUEUE_PREFIX', '')}{name}")
    for name in ("realtime", "transactional", "bulk", "default")
]
app.autodiscover_tasks()

# Celery's Django fixup closes the database connection around every task unless told to reuse it:
# a new PostgreSQL backend per delivery cost more than the delivery itself. Reuse it, and check it
# before each task the way Django checks at each request (a broken one is replaced).
app.conf["CELERY_DB_REUSE_MAX"] = int(os.environ.get("CELERY_DB_REUSE_MAX", "1000"))


@signals.task_prerun.connect
def _fresh_connections(**kwargs):
    close_old_connections()


# Heartbeats: the worker and beat each write theirs to Redis; /health/ready reports their age.
from communication import heartbeat  # noqa: E402,F401  (connects the signal handlers)
