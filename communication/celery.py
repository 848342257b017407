"""The Celery application: ``celery -A communication worker|beat``.

Queues: ``realtime`` (websocket-adjacent, user is waiting), ``transactional`` (one-off sends),
``bulk`` (campaign fan-out), ``default`` (sweeps, rollups, housekeeping).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")

app = Celery("communication")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in ("realtime", "transactional", "bulk", "default")]
app.autodiscover_tasks()

# Heartbeats: the worker and beat each write theirs to Redis; /health/ready reports their age.
from communication import heartbeat  # noqa: E402,F401  (connects the signal handlers)
