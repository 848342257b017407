"""Periodic tasks, defined here and written to django-celery-beat by ``setup_schedules``.

Each entry: name -> (task, every seconds, queue). Apps add their sweeps here as they arrive.
"""

SCHEDULES: dict[str, tuple[str, float, str]] = {
    "heartbeat-roundtrip": ("communication.tasks.heartbeat_roundtrip", 30.0, "default"),
}
