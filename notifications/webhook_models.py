"""Outbound webhooks' tables: a calling service's endpoints, the messages owed to them, and each
attempt (``notifications.services.webhooks``)."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from communication.fields import EncryptedTextField
from communication.ids import uuid7


class WebhookEndpoint(models.Model):
    """A calling service's URL that receives signed events (``notifications.services.webhooks``).

    ``owner`` is the service's client id (the caller string its sends carry); ``scopes`` are the
    scopes its token held when it subscribed, which decide the events without a caller it may
    receive (``message.created`` needs ``messaging:read``, ``campaign.completed``
    ``campaigns:manage``). Two secrets during a rotation: the current one, and the previous one
    until ``previous_secret_expires_at``."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    owner = models.CharField(max_length=255)
    url = models.URLField(max_length=2000)
    events = ArrayField(models.CharField(max_length=64))
    scopes = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    description = models.CharField(max_length=500, blank=True)
    secret = EncryptedTextField()
    previous_secret = EncryptedTextField(blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=255, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    class Meta:
        indexes = [
            # The emitters' look-up: a caller's enabled endpoints (usually none).
            models.Index(
                fields=["owner"], name="webhook_endpoint_owner", condition=Q(disabled_at=None)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.owner} → {self.url}"

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


class WebhookMessage(models.Model):
    """One event for one endpoint, kept until delivered or dead (the delivery log). Messages of
    an endpoint with the same ``ordering_key`` go out one after another (by ``id``)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERING = "delivering"
        DELIVERED = "delivered"
        DEAD = "dead"

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=40, unique=True, help_text="msg_…, the Webhook-Id")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="messages")
    event_type = models.CharField(max_length=64)
    # Ids and states only (no personal data): plain JSON, so that the send path's own
    # statements can write it (see ``services.webhooks``).
    payload = models.JSONField(encoder=DjangoJSONEncoder)
    ordering_key = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_default=Now())
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "delivering", "delivered", "dead"]),
                name="webhook_message_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status="delivering") | Q(lease_until__isnull=False),
                name="webhook_message_delivering_leased",
            ),
        ]
        indexes = [
            # The dispatcher's due query and the sweep's expired leases.
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_message_due",
                condition=Q(status="pending"),
            ),
            models.Index(
                fields=["lease_until"],
                name="webhook_message_lease",
                condition=Q(status="delivering"),
            ),
            # "Is an earlier message of this key still owed?" (ordering).
            models.Index(
                fields=["endpoint", "ordering_key", "id"],
                name="webhook_message_open_key",
                condition=Q(status__in=["pending", "delivering"]) & ~Q(ordering_key=""),
            ),
            # The endpoint's delivery log, newest first.
            models.Index(fields=["endpoint", "-id"], name="webhook_message_log"),
            # The hourly prune of the log past WEBHOOKS_LOG_RETENTION_DAYS.
            models.Index(fields=["created_at"], name="webhook_message_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} {self.event_type} ({self.status})"


class WebhookAttempt(models.Model):
    """One POST of a message: what the endpoint answered and how fast."""

    id = models.BigAutoField(primary_key=True)
    message = models.ForeignKey(
        WebhookMessage, on_delete=models.CASCADE, related_name="attempts_log"
    )
    at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [models.Index(fields=["message", "-id"], name="webhook_attempt_message")]

    def __str__(self) -> str:
        return f"{self.message_id} @ {self.at:%H:%M:%S}: {self.status_code or self.error}"
