"""The append-only event table every delivery state change is written to.

Grows to hundreds of millions of rows later (partitioned by time then); today it is one table with
the indexes the first reports need. Rows are never updated.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Event(models.Model):
    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=40)  # queued, sent, delivered, failed, opened, clicked …
    occurred_at = models.DateTimeField(db_default=Now())
    channel = models.CharField(max_length=16, blank=True)
    provider = models.CharField(max_length=40, blank=True)
    category = models.CharField(max_length=64, blank=True)
    caller = models.CharField(max_length=255, blank=True)
    notification_id = models.UUIDField(null=True, blank=True)
    delivery_id = models.UUIDField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    cost = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["delivery_id", "occurred_at"], name="event_delivery_time"),
            models.Index(fields=["type", "occurred_at"], name="event_type_time"),
            # Provider calls (the events with a latency) for the console's provider health: the
            # counts and the p95 are read from the index alone.
            models.Index(
                fields=["occurred_at"],
                include=["channel", "provider", "type", "latency_ms"],
                condition=models.Q(latency_ms__isnull=False),
                name="event_provider_calls",
            ),
            # The last error of each provider: one probe per (channel, provider).
            models.Index(
                fields=["channel", "provider", "occurred_at"],
                condition=models.Q(
                    type__in=["retry", "failed", "ambiguous"], latency_ms__isnull=False
                ),
                name="event_provider_errors",
            ),
            # Failures and their reasons (in ``data``) for the console, from the index alone.
            models.Index(
                fields=["occurred_at"],
                include=["channel", "data"],
                condition=models.Q(type="failed"),
                name="event_failures",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.delivery_id or ''}"
