"""Periodic tasks, defined here and written to django-celery-beat by ``setup_schedules``.

Each entry: name -> (task, every seconds, queue). Apps add their sweeps here as they arrive.
"""

SCHEDULES: dict[str, tuple[str, float, str]] = {
    "heartbeat-roundtrip": ("communication.tasks.heartbeat_roundtrip", 30.0, "default"),
    # Personal data past its retention, the realtime event log included (compliance.retention).
    "compliance-retention": ("communication.tasks.retention_run", 3600.0, "default"),
    "audit-chain": ("communication.tasks.audit_chain", 10.0, "default"),
    # The whole chain recomputed once a day; the console's header shows the outcome.
    "audit-verify": ("communication.tasks.audit_verify", 86400.0, "default"),
    "messaging-presence-sweep": ("messaging.tasks.presence_sweep", 15.0, "default"),
    "deliveries-sweep": ("notifications.tasks.sweep", 5.0, "default"),
    # Outbound webhooks: retries come due, leases of a dead worker expire.
    "webhooks-sweep": ("notifications.tasks.webhooks_sweep", 5.0, "default"),
    "webhooks-prune": ("notifications.tasks.webhooks_prune", 3600.0, "default"),
    # Held deliveries whose digest (or quiet hours' end) is due, sent as one digest each.
    "digests-release": ("notifications.tasks.release_digests", 60.0, "default"),
    "idempotency-prune": ("notifications.tasks.prune_idempotency_keys", 3600.0, "default"),
    # On the bulk worker: starting a run writes its whole first step, not for the worker that
    # carries transactional traffic.
    "campaigns-due": ("campaigns.tasks.due", 5.0, "bulk"),
    "analytics-rollup": ("analytics.tasks.rollup", 60.0, "default"),
    "analytics-partitions": ("analytics.tasks.maintain_partitions", 86400.0, "default"),
}

# Entries an earlier release wrote whose task is gone: setup_schedules deletes them, or beat
# would keep sending a task no worker knows.
RETIRED: tuple[str, ...] = (
    "realtime-events-prune",  # replaced by compliance-retention
)
