"""The append-only event table every delivery state change is written to, and the rollups the
reports read.

The event table is partitioned by month of ``occurred_at`` (``analytics.partitions``, migration
0003): its primary key in the database is ``(id, occurred_at)``, ``id`` comes from a sequence
(identity columns on partitioned tables need PostgreSQL 17), and a database-only ``xid`` column
(the inserting transaction, ``pg_current_xact_id()``) is the rollups' ingestion watermark. Django
sees ``id`` alone as the key, which the admin needs and the sequence keeps unique. Rows are never
updated.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Now

# Upper bounds (ms) of the latency histograms' buckets; a last bucket counts everything above.
# Percentiles come from these counts (analytics.stats), so they never change once data exists.
LATENCY_BOUNDS_MS = (
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000,
)  # fmt: skip
HISTOGRAM_SIZE = len(LATENCY_BOUNDS_MS) + 1

# A rollup's dimensions, its integer counts and its histograms (``Rollup``'s columns), named once
# for the code that writes them and the code that reads them.
ROLLUP_DIMENSIONS = (
    "channel", "provider", "category", "template", "variant", "campaign_id", "step_id",
)  # fmt: skip
ROLLUP_COUNTS = (
    "sent",
    "delivered",
    "failed",
    "bounced",
    "complained",
    "opened",
    "opened_unique",
    "machine_opened",
    "clicked",
    "clicked_unique",
    "unsubscribed",
    "provider_calls",
    "provider_errors",
    "possibly_duplicate",
)
ROLLUP_HISTOGRAMS = ("latency_hist", "queue_wait_hist", "api_to_provider_hist")


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
    # The dimensions reports and campaigns group by (the campaign's three are filled by campaigns).
    user_id = models.UUIDField(null=True, blank=True)
    template = models.CharField(max_length=100, blank=True)  # the template family's key
    template_version = models.UUIDField(null=True, blank=True)
    variant = models.CharField(max_length=64, blank=True)
    campaign_id = models.UUIDField(null=True, blank=True)
    step_id = models.UUIDField(null=True, blank=True)
    run_id = models.UUIDField(null=True, blank=True)
    # An open or click made by a machine (mail privacy proxy, link scanner): kept, not counted as
    # a person's.
    machine = models.BooleanField(default=False, db_default=False)
    # On "sent": from queued to the provider call, and from the API request to the provider's
    # answer (``latency_ms`` is the provider call alone).
    queue_wait_ms = models.FloatField(null=True, blank=True)
    api_to_provider_ms = models.FloatField(null=True, blank=True)

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
            # Segment and step conditions on a user's history ("opened in 30 days", "clicked
            # step 1"): one probe per user, the campaign and step read from the index.
            models.Index(
                fields=["user_id", "type", "occurred_at"],
                include=["campaign_id", "step_id"],
                condition=models.Q(user_id__isnull=False),
                name="event_user_type_time",
            ),
            # The users who did something with a step, for conditions read the other way round.
            models.Index(
                fields=["step_id", "type", "user_id"],
                condition=models.Q(step_id__isnull=False),
                name="event_step_type_user",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.delivery_id or ''}"


class Granularity(models.TextChoices):
    HOUR = "hour"
    DAY = "day"


class Rollup(models.Model):
    """Counts of one bucket (an hour or a UTC day) for one combination of the dimensions.

    Rebuilt whole per bucket from the events (``analytics.rollups``): re-running a bucket gives
    the same row. Every event counts in the bucket of its own ``occurred_at``; a unique open or
    click in the bucket of the delivery's first one.
    """

    granularity = models.CharField(max_length=4, choices=Granularity.choices)
    bucket = models.DateTimeField()
    channel = models.CharField(max_length=16, blank=True)
    provider = models.CharField(max_length=40, blank=True)
    category = models.CharField(max_length=64, blank=True)
    template = models.CharField(max_length=100, blank=True)
    variant = models.CharField(max_length=64, blank=True)
    campaign_id = models.UUIDField(null=True, blank=True)
    step_id = models.UUIDField(null=True, blank=True)

    sent = models.BigIntegerField(default=0)
    delivered = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    bounced = models.BigIntegerField(default=0)
    complained = models.BigIntegerField(default=0)
    opened = models.BigIntegerField(default=0)
    opened_unique = models.BigIntegerField(default=0)
    machine_opened = models.BigIntegerField(default=0)
    clicked = models.BigIntegerField(default=0)
    clicked_unique = models.BigIntegerField(default=0)
    unsubscribed = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    # Provider calls (events with a latency) and those that ended in an error.
    provider_calls = models.BigIntegerField(default=0)
    provider_errors = models.BigIntegerField(default=0)
    # Sends flagged possibly_duplicate: sent again after a worker died during the provider call,
    # so the person may have the message twice (counted in ``sent`` as well).
    possibly_duplicate = models.BigIntegerField(default=0, db_default=0)
    latency_sum_ms = models.FloatField(default=0)
    # Counts per LATENCY_BOUNDS_MS bucket: provider call, queue wait, API request to provider.
    latency_hist = ArrayField(models.BigIntegerField(), size=HISTOGRAM_SIZE)
    queue_wait_hist = ArrayField(models.BigIntegerField(), size=HISTOGRAM_SIZE)
    api_to_provider_hist = ArrayField(models.BigIntegerField(), size=HISTOGRAM_SIZE)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "granularity",
                    "bucket",
                    "channel",
                    "provider",
                    "category",
                    "template",
                    "variant",
                    "campaign_id",
                    "step_id",
                ],
                nulls_distinct=False,
                name="rollup_bucket_dimensions",
            ),
        ]
        indexes = [
            models.Index(fields=["campaign_id", "granularity", "bucket"], name="rollup_campaign"),
            models.Index(fields=["template", "granularity", "bucket"], name="rollup_template"),
        ]

    def __str__(self) -> str:
        return f"{self.granularity} {self.bucket:%Y-%m-%d %H:%M}"


class FirstEngagement(models.Model):
    """A delivery's first open and first click (by people, not machines): what makes an open or
    a click unique. The earliest event wins; the rollups keep it as they read new events."""

    delivery_id = models.UUIDField()
    type = models.CharField(max_length=16)  # opened, clicked
    occurred_at = models.DateTimeField()
    event_id = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["delivery_id", "type"], name="first_engagement_once"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.delivery_id}"


class RollupWatermark(models.Model):
    """How far the rollups have read the event table: every transaction whose id is below
    ``xid`` has ended, and its events are counted."""

    name = models.CharField(max_length=32, primary_key=True)
    xid = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name
