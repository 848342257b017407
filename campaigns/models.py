"""Models of campaigns: audiences (segments, static lists), campaigns with their steps, their runs
and the ledger of who was sent which step of which run (CampaignRecipient)."""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from communication.fields import EncryptedJSONField, EncryptedTextField
from communication.ids import uuid7


class Segment(models.Model):
    """A saved filter over users, written in the rule language of ``campaigns.segments``.

    ``rules`` is stored as validated; it is compiled to one query whenever it is counted or sent
    to, so a segment always reflects the users as they are at that moment.
    ``created_by`` is an actor string (``user:<id>``, ``staff:<username>``, ``service:<id>``).
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    rules = models.JSONField()
    created_by = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["-created_at"], name="segment_recent")]

    def __str__(self) -> str:
        return self.name


class StaticList(models.Model):
    """An explicit audience: users or raw addresses, each with its own data (uploaded as CSV)."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_by = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return self.name


class StaticListMember(models.Model):
    """One recipient of a static list. ``key`` is the user's external id, or for an
    address-only member the keyed hash (``lookup_hash``) of its normalised address (email
    lower-cased, phone in E.164): the address and data are encrypted, the key dedups."""

    id = models.BigAutoField(primary_key=True)
    static_list = models.ForeignKey(StaticList, on_delete=models.CASCADE, related_name="members")
    key = models.CharField(max_length=320)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    email = EncryptedTextField(blank=True)
    phone = EncryptedTextField(blank=True)
    data = EncryptedJSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["static_list", "key"], name="static_member_unique"),
            # The address is encrypted: its key (the hash) stands for it in SQL.
            models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(key=""),
                name="static_member_has_address",
            ),
        ]

    def __str__(self) -> str:
        return self.key


class Campaign(models.Model):
    """Personalised messages to an audience: once, at a time, recurring, or as a sequence of
    steps. Its status moves only through ``campaigns.services`` (see ``TRANSITIONS`` there)."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        PENDING_APPROVAL = "pending_approval"
        SCHEDULED = "scheduled"
        RUNNING = "running"
        PAUSED = "paused"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.CharField(max_length=200)
    category = models.ForeignKey(
        "communication.Category", on_delete=models.PROTECT, to_field="key", related_name="+"
    )
    # As a send's ``channels``: a list of channels, or ["auto"].
    channels = models.JSONField(default=list)
    # The audience: a segment or a static list (one of them when scheduled).
    segment = models.ForeignKey(
        Segment, on_delete=models.PROTECT, null=True, blank=True, related_name="campaigns"
    )
    static_list = models.ForeignKey(
        StaticList, on_delete=models.PROTECT, null=True, blank=True, related_name="campaigns"
    )
    data = models.JSONField(default=dict, blank=True, help_text="variables every message gets")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    # The schedule: a time (``send_at``, null for now), a wall-clock time in each recipient's zone
    # (``local_time``), or a cron expression; ``timezone`` is the zone of the cron expression and
    # of recipients without one.
    send_at = models.DateTimeField(null=True, blank=True)
    local_time = models.TimeField(null=True, blank=True)
    cron = models.CharField(max_length=100, blank=True)
    timezone = models.CharField(max_length=64, blank=True, default="UTC")
    # The send window in each recipient's local time: a step due outside it waits for its start.
    window_start = models.TimeField(null=True, blank=True)
    window_end = models.TimeField(null=True, blank=True)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    audience_count = models.PositiveIntegerField(null=True, blank=True)
    pause_reason = models.CharField(max_length=255, blank=True)
    created_by = models.CharField(max_length=255, blank=True)
    approved_by = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "draft",
                        "pending_approval",
                        "scheduled",
                        "running",
                        "paused",
                        "completed",
                        "cancelled",
                    ]
                ),
                name="campaign_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(segment__isnull=True) | Q(static_list__isnull=True),
                name="campaign_one_audience",
            ),
        ]
        indexes = [models.Index(fields=["status", "-created_at"], name="campaign_status")]

    def __str__(self) -> str:
        return self.name


class CampaignStep(models.Model):
    """One message of a campaign. The first step goes at the run's slot; each later one
    ``delay`` after the previous step reached the recipient, or at ``send_at``. ``condition``
    selects who gets it: ``{"previous": "opened" | "clicked" | "not_opened" | "not_clicked"}``
    or a segment rule over the recipient (``{"field": …, "op": …, "value": …}``)."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    template_key = models.CharField(max_length=100, blank=True)
    content = models.JSONField(default=dict, blank=True, help_text="inline content, no template")
    delay = models.DurationField(null=True, blank=True)
    send_at = models.DateTimeField(null=True, blank=True)
    condition = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("campaign", "position")
        constraints = [
            models.UniqueConstraint(fields=["campaign", "position"], name="campaign_step_unique")
        ]

    def __str__(self) -> str:
        return f"Step {self.position}"


class CampaignRun(models.Model):
    """One execution of a campaign: a one-off campaign has one, a recurring one one per slot.
    Unique on (campaign, slot): two beat processes or a restart never run a slot twice."""

    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    slot = models.DateTimeField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    total = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("campaign", "-slot")
        constraints = [
            models.UniqueConstraint(fields=["campaign", "slot"], name="campaign_run_slot_unique")
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} {self.slot:%Y-%m-%d %H:%M}"


class CampaignRecipient(models.Model):
    """The ledger: one row per run, step and recipient, unique on (run, step, recipient key) so
    that pause, resume, crash and retry never send a step twice. ``key`` is the user's external
    id, or the keyed hash of an address-only recipient's address (as ``StaticListMember.key``);
    its address and data are encrypted, blank for a user (read from the user row at send time).
    ``notification_id`` is written in the transaction that writes the notification and its
    deliveries."""

    class State(models.TextChoices):
        PENDING = "pending"  # due at due_at, not fanned out yet
        QUEUED = "queued"  # its notification and deliveries are written
        SKIPPED = "skipped"  # the step's condition excluded it
        FAILED = "failed"  # could not be written (e.g. its data fails the template's schema)
        CANCELLED = "cancelled"

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(CampaignRun, on_delete=models.CASCADE, related_name="recipients")
    step = models.ForeignKey(CampaignStep, on_delete=models.CASCADE, related_name="recipients")
    key = models.CharField(max_length=320)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    email = EncryptedTextField(blank=True)
    phone = EncryptedTextField(blank=True)
    data = EncryptedJSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    reason = models.CharField(max_length=255, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    notification_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "step", "key"], name="campaign_recipient_unique"
            ),
        ]
        indexes = [
            models.Index(
                fields=["run", "step", "due_at", "id"],
                name="campaign_recipient_pending",
                condition=Q(state="pending"),
            ),
            models.Index(fields=["run", "step", "state"], name="campaign_recipient_state"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"
