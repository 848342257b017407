"""Preferences, consent, suppression, and the three rows of a send: request → notification →
delivery (see "The delivery pipeline" in DESIGN.md)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from communication.compliance.keyed import keyed_hash
from communication.fields import EncryptedJSONField, EncryptedTextField, LookupHashField
from communication.ids import uuid7


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    PUSH = "push", "Push"
    IN_APP = "in_app", "In-app"


class Priority(models.TextChoices):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class DeliveryMode(models.TextChoices):
    IMMEDIATE = "immediate"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    OFF = "off"


class NotificationPreference(models.Model):
    """One user's choice for one category on one channel. Absent = the category's default.

    ``mode`` says how often (at once, in an hourly, daily or weekly digest, or never);
    ``enabled`` is ``mode != "off"``, kept for the readers that only ask "on or off" (a database
    constraint holds the two together). ``digest_time`` / ``digest_weekday`` empty: the
    category's.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    category = models.ForeignKey("communication.Category", on_delete=models.CASCADE, to_field="key")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    enabled = models.BooleanField()
    mode = models.CharField(
        max_length=10, choices=DeliveryMode.choices, default=DeliveryMode.IMMEDIATE
    )
    digest_time = models.TimeField(null=True, blank=True)
    digest_weekday = models.PositiveSmallIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "category", "channel"], name="preference_unique"
            ),
            models.CheckConstraint(
                condition=Q(enabled=True, mode__in=["immediate", "hourly", "daily", "weekly"])
                | Q(enabled=False, mode="off"),
                name="preference_mode_enabled",
            ),
            models.CheckConstraint(
                condition=Q(digest_weekday__isnull=True) | Q(digest_weekday__lte=6),
                name="preference_digest_weekday",
            ),
            # The inbox item is the message: in-app is never held for a digest.
            models.CheckConstraint(
                condition=~Q(channel="in_app", mode__in=["hourly", "daily", "weekly"]),
                name="preference_in_app_not_digest",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} · {self.category_id} by {self.channel}: {self.mode}"

    def save(self, *args, **kwargs):
        # Writers that only say "on or off" (an unsubscribe link, a fixture) keep the mode in
        # step: off is off, and turning on again starts immediate.
        if not self.enabled:
            self.mode = DeliveryMode.OFF
        elif self.mode == DeliveryMode.OFF:
            self.mode = DeliveryMode.IMMEDIATE
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "enabled" in update_fields:
            kwargs["update_fields"] = {*update_fields, "mode"}
        super().save(*args, **kwargs)


class QuietHours(models.Model):
    """A daily window, in the user's own time zone, when non-urgent sends wait."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quiet_hours"
    )
    start = models.TimeField()
    end = models.TimeField()
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "quiet hours"
        constraints = [
            models.CheckConstraint(
                condition=~Q(start=models.F("end")), name="quiet_hours_not_empty"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} · quiet {self.start:%H:%M} to {self.end:%H:%M}"


class Consent(models.Model):
    """An append-only record of consent given or withdrawn; the latest one for a scope wins.

    ``channel`` / ``category`` empty mean "all".
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="consents"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices, blank=True)
    category = models.ForeignKey(
        "communication.Category", on_delete=models.CASCADE, to_field="key", null=True, blank=True
    )
    granted = models.BooleanField()
    source = models.CharField(max_length=64)
    evidence = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"], name="consent_user_recent")]

    def __str__(self) -> str:
        what = self.category_id or "every category"
        how = f" by {self.channel}" if self.channel else ""
        return f"{self.user} {'granted' if self.granted else 'withdrew'} {what}{how}"


def suppression_hash(address: str) -> str:
    """The keyed hash a suppression is looked up by (``address`` normalised: lower-cased email,
    E.164 number): it outlives the address, which an erasure blanks."""
    return keyed_hash(address)


class Suppression(models.Model):
    """An address nothing is sent to, found by its keyed hash (``address_hash``). ``address`` is
    kept, encrypted, for staff to read until the person's data is erased; then it is NULL (which
    SQL can tell, unlike an encrypted blank) and the hash alone keeps the address suppressed
    (hence a plain column set by ``save`` and the services, not a ``LookupHashField``, which
    would go with the address)."""

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce"
        COMPLAINT = "complaint"
        UNSUBSCRIBE = "unsubscribe"
        MANUAL = "manual"
        INVALID = "invalid"
        ERASED = "erased"

    ERASED_LABEL = "[erased]"

    channel = models.CharField(max_length=16, choices=Channel.choices)
    address = EncryptedTextField(
        null=True, blank=True, help_text="email (lower-cased) or E.164 number; NULL once erased"
    )
    address_hash = models.CharField(max_length=64, editable=False)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "address_hash"], name="suppression_unique")
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.shown_address} ({self.reason})"

    @property
    def shown_address(self) -> str:
        return self.address or self.ERASED_LABEL

    def save(self, *args, **kwargs) -> None:
        # A row written with its address alone (the console's form, a fixture) is found by hash.
        if self.address and not self.address_hash:
            self.address_hash = suppression_hash(self.address)
        super().save(*args, **kwargs)


class IdempotencyKey(models.Model):
    """A caller's ``Idempotency-Key``, claimed in its own committed transaction before the send.

    ``in_flight`` while the first request runs (a concurrent replay gets 409), then the stored
    answer. Kept 24 h.
    """

    caller = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    in_flight = models.BooleanField(default=True)
    status_code = models.PositiveSmallIntegerField(null=True)
    # The answer repeats the recipients as the caller named them (addresses).
    response = EncryptedJSONField(encoder=DjangoJSONEncoder, null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["caller", "key"], name="idempotency_unique")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]


class NotificationRequest(models.Model):
    """One API call: who asked, for what, how."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    caller = models.CharField(max_length=255)
    idempotency_key = models.CharField(max_length=255, blank=True)
    category = models.ForeignKey("communication.Category", on_delete=models.PROTECT, to_field="key")
    template_key = models.CharField(max_length=100, blank=True)
    content = EncryptedJSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    data = EncryptedJSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    locale = models.CharField(max_length=35, blank=True)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    channels = models.JSONField(default=list)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    scheduled_local = models.BooleanField(default=False)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    # The caller's own name for what this send is about: ``POST /notifications/cancel`` with it
    # cancels every delivery of the caller's requests carrying it not yet handed to a provider.
    cancellation_key = models.CharField(max_length=255, blank=True)
    # The send's escalation, as the caller gave it (``[{"channel", "after"}]``, ``after`` in
    # seconds): each later step is a delivery scheduled that long after the send, cancelled
    # when the notification is read first (``notifications.services.cancellation``).
    escalation = models.JSONField(default=list, blank=True)
    # A request made by "resend" in the staff console: the delivery it sends again.
    resent_from = models.ForeignKey(
        "Delivery",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="resends",
    )
    # scheduled_local: the zone of a recipient who has none (a campaign's default zone).
    local_timezone = models.CharField(max_length=64, blank=True)
    # A bulk request (POST /notifications/bulk): its recipients wait in BulkRecipient until the
    # bulk worker fans them out; ``accepted`` and ``rejected`` are the answer the caller got.
    bulk = models.BooleanField(default=False)
    accepted = models.PositiveIntegerField(default=0)
    rejected = models.JSONField(default=list, blank=True)
    # A campaign's send (one request per run and step): the ids events carry. No foreign keys:
    # campaigns builds on notifications, not the other way round.
    campaign_id = models.UUIDField(null=True, blank=True)
    step_id = models.UUIDField(null=True, blank=True)
    run_id = models.UUIDField(null=True, blank=True)
    # Set while its campaign is paused: workers claim none of its deliveries (they stay queued)
    # until it is released (``requests_hold`` / ``requests_release``).
    held_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        indexes = [
            models.Index(fields=["caller", "-created_at"], name="request_caller_recent"),
            models.Index(
                fields=["campaign_id", "run_id", "step_id"],
                name="request_campaign",
                condition=Q(campaign_id__isnull=False),
            ),
            models.Index(
                fields=["caller", "cancellation_key"],
                name="request_cancellation_key",
                condition=~Q(cancellation_key=""),
            ),
            # Support staff look a request up by the caller's idempotency key.
            models.Index(
                fields=["idempotency_key"],
                name="request_idempotency_key",
                condition=~Q(idempotency_key=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.caller} {self.template_key or 'inline'} {self.created_at:%Y-%m-%d %H:%M}"


class BulkRecipient(models.Model):
    """A bulk request's recipient not yet fanned out: written (set-based) before the 202, turned
    into its Notification and Deliveries by the bulk worker and deleted in the same transaction.
    ``data`` is the recipient's own, merged over the request's."""

    id = models.BigAutoField(primary_key=True)
    # No index of its own: the unique (request, position) serves every look-up by request.
    request = models.ForeignKey(
        NotificationRequest,
        on_delete=models.CASCADE,
        related_name="pending_recipients",
        db_index=False,
    )
    position = models.PositiveIntegerField(help_text="index in the request's recipients")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    spec = EncryptedJSONField(
        encoder=DjangoJSONEncoder, help_text="as the caller named it: user_id, email or phone"
    )
    email = EncryptedTextField(blank=True)
    phone = EncryptedTextField(blank=True)
    # The compliance registry finds a person's waiting rows by these.
    email_hash = LookupHashField(of="email")
    phone_hash = LookupHashField(of="phone")
    data = EncryptedJSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "position"], name="bulk_recipient_unique")
        ]


class Notification(models.Model):
    """One recipient of a request: the person's inbox item (read / dismissed state)."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    request = models.ForeignKey(
        NotificationRequest, on_delete=models.CASCADE, related_name="notifications"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
    )
    recipient = EncryptedJSONField(
        encoder=DjangoJSONEncoder, help_text="as the caller named it: user_id, email or phone"
    )
    email = EncryptedTextField(blank=True)
    phone = EncryptedTextField(blank=True)
    # The compliance registry finds a person's notifications by these.
    email_hash = LookupHashField(of="email")
    phone_hash = LookupHashField(of="phone")
    category = models.ForeignKey("communication.Category", on_delete=models.PROTECT, to_field="key")
    locale = models.CharField(max_length=35, blank=True)
    title = EncryptedTextField(blank=True)
    body = EncryptedTextField(blank=True)
    action_url = models.URLField(max_length=2000, blank=True)
    # A notification about a message quotes it: encrypted for every notification (one path).
    data = EncryptedJSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)
    # When the in-app delivery was delivered: the item is in the inbox from then on. Null for a
    # send with no in-app delivery, one still scheduled, and one cancelled before its time.
    # Written with the delivery's change (in the same statement or transaction), so the inbox
    # reads one table.
    inbox_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        indexes = [
            models.Index(fields=["user", "-created_at"], name="notification_user_recent"),
            models.Index(
                fields=["user", "-inbox_at", "-id"],
                name="notification_user_inbox",
                condition=Q(inbox_at__isnull=False, dismissed_at__isnull=True),
            ),
            models.Index(
                fields=["user", "-inbox_at", "-id"],
                name="notification_user_unread",
                condition=Q(
                    inbox_at__isnull=False, read_at__isnull=True, dismissed_at__isnull=True
                ),
            ),
        ]

    def __str__(self) -> str:
        who = self.email or self.phone or (self.recipient or {}).get("user_id", "")
        # An email-only send keeps no inbox title.
        return f"{self.category_id} to {who}" + (f": {self.title[:60]}" if self.title else "")


class Delivery(models.Model):
    """One notification on one channel, and everything that happened to it."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled"
        # Waiting for the recipient's digest (or the end of their quiet hours): sent inside
        # one digest message, never on its own.
        HELD = "held"
        QUEUED = "queued"
        SENDING = "sending"
        SENT = "sent"
        DELIVERED = "delivered"
        FAILED = "failed"
        AMBIGUOUS = "ambiguous"
        SUPPRESSED = "suppressed"
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    FINAL = (Status.DELIVERED, Status.FAILED, Status.SUPPRESSED, Status.SKIPPED, Status.CANCELLED)
    # The order a delivery moves through; provider events never move it backwards.
    RANK = {
        "scheduled": 0,
        "held": 0,
        "queued": 1,
        "sending": 2,
        "ambiguous": 3,
        "sent": 4,
        "delivered": 5,
        "failed": 5,
        "suppressed": 5,
        "skipped": 5,
        "cancelled": 5,
    }

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="deliveries"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    address = EncryptedTextField(blank=True)
    # The delivery log's exact-address search and the compliance registry use this.
    address_hash = LookupHashField(of="address")
    status = models.CharField(max_length=12, choices=Status.choices)
    reason = models.CharField(max_length=255, blank=True)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    attempts = models.PositiveIntegerField(default=0)
    provider_attempts = models.PositiveIntegerField(default=0)
    provider_index = models.PositiveSmallIntegerField(default=0)
    provider = models.CharField(max_length=40, blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    # A provider's answer may quote the address ("550 <bob@…>: no such user").
    error = EncryptedTextField(blank=True)
    template_version = models.UUIDField(null=True, blank=True)
    variant = models.CharField(max_length=64, blank=True)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    first_failure_at = models.DateTimeField(null=True, blank=True)
    # Push only: what each device answered, ``{device id: {platform, provider, status, …}}``,
    # kept across attempts so that a retry only goes to the devices still owed the message.
    # Encrypted: a provider's error may quote the device token.
    device_results = EncryptedJSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())
    queued_at = models.DateTimeField(null=True, blank=True)
    sending_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    # A held delivery sent inside a digest: the digest it went out in.
    digest = models.ForeignKey(
        "notifications.Digest",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="items",
        db_index=False,
    )
    # Its position in the request's escalation (0: the first, immediate step); NULL outside
    # one. A read of the notification cancels the pending steps past 0.
    escalation_step = models.PositiveSmallIntegerField(null=True, blank=True)
    # Set just before this attempt's provider call (cleared by the claim): a lease that expires
    # with it set means the call may have reached the provider before the worker died.
    provider_call_at = models.DateTimeField(null=True, blank=True)
    # Sent again after such a crash: the recipient may have the message twice.
    possibly_duplicate = models.BooleanField(default=False, db_default=False)
    # Leases that expired during a provider call (the worker died in it): past
    # DELIVERY_MAX_CRASHES the delivery is dead-lettered rather than tried again.
    crashes = models.PositiveSmallIntegerField(default=0, db_default=0)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["notification", "channel"], name="delivery_one_per_channel"
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "scheduled",
                        "held",
                        "queued",
                        "sending",
                        "sent",
                        "delivered",
                        "failed",
                        "ambiguous",
                        "suppressed",
                        "skipped",
                        "cancelled",
                    ]
                ),
                name="delivery_status_valid",
            ),
        ]
        indexes = [
            # The delivery log's search by exact recipient address.
            models.Index(
                fields=["address_hash"], name="delivery_address", condition=~Q(address_hash="")
            ),
            # The sweeps: due scheduled ones, expired leases, queued ones never picked up.
            models.Index(
                fields=["scheduled_for"], name="delivery_due", condition=Q(status="scheduled")
            ),
            models.Index(
                fields=["lease_until"], name="delivery_lease", condition=Q(status="sending")
            ),
            # The digest release: held deliveries whose digest (or quiet hours' end) is due.
            models.Index(
                fields=["scheduled_for"], name="delivery_held_due", condition=Q(status="held")
            ),
            # A digest's items (the console, the SET NULL when a digest is deleted).
            models.Index(
                fields=["digest"], name="delivery_digest", condition=Q(digest__isnull=False)
            ),
            models.Index(
                fields=["updated_at"], name="delivery_queued", condition=Q(status="queued")
            ),
            # The send API's admission control counts each priority class's backlog from this
            # index alone (notifications.services.admission). Its ``priority IS NOT NULL``, always
            # true, only keeps queries that name no priority (the sweep's) on delivery_queued.
            models.Index(
                fields=["priority"],
                name="delivery_backlog",
                condition=Q(status="queued", priority__isnull=False),
            ),
            models.Index(
                fields=["provider", "provider_message_id"],
                name="delivery_provider_id",
                condition=~Q(provider_message_id=""),
            ),
            # The console's sends by day, channel and status: read from the index alone.
            models.Index(
                fields=["created_at"], include=["channel", "status"], name="delivery_created"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.address or '-'} ({self.status})"


# The caller of a digest's own request (``services.digests``): frequency caps let it through.
DIGEST_CALLER = "system:digest"


class Digest(models.Model):
    """One digest sent to a user on a channel: the held deliveries it gathered (``items``,
    marked sent with reason ``digest``) and its own delivery, written by the usual pipeline."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="digests"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    # The oldest and newest item it gathered, and when it was released.
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    released_at = models.DateTimeField()
    item_count = models.PositiveIntegerField()
    # Why it went out: a digest the user chose, or the end of their quiet hours.
    reason = models.CharField(max_length=32, blank=True)
    delivery = models.OneToOneField(Delivery, on_delete=models.CASCADE, related_name="digest_sent")
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["user", "-released_at"], name="digest_user_recent")]

    def __str__(self) -> str:
        return f"{self.channel} digest of {self.item_count} for {self.user}"


class CapSlot(models.Model):
    """A delivery that took one place in its recipient's frequency cap (``services.caps``): one
    row per delivery handed to a provider in a capped category and channel, counted over the
    cap's sliding window. ``subject`` is the person: ``u:<user id>``, or ``a:<address hash>``
    for an address-only recipient (the keyed hash: no address in the clear)."""

    id = models.BigAutoField(primary_key=True)
    subject = models.CharField(max_length=80)
    category = models.CharField(max_length=64)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    # One place per delivery, whatever its retries: the unique index is the proof.
    delivery = models.OneToOneField(Delivery, on_delete=models.CASCADE, related_name="+")
    granted_at = models.DateTimeField()

    class Meta:
        indexes = [
            # The window's count: one person's places in one category and channel, by time.
            models.Index(
                fields=["subject", "category", "channel", "granted_at"], name="capslot_window"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.category}/{self.channel} for {self.subject} at {self.granted_at}"


class OutboxMessage(models.Model):
    """What a channel with no configured provider "sent": the development outbox."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    delivery = models.ForeignKey(
        Delivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="outbox_messages"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    to = EncryptedTextField()
    # The outbox API's ``?to=``, the console's exact search and the compliance registry.
    to_hash = LookupHashField(of="to")
    subject = EncryptedTextField(blank=True)
    text = EncryptedTextField(blank=True)
    html = EncryptedTextField(blank=True)
    payload = EncryptedJSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["-created_at"], name="outbox_recent"),
            models.Index(fields=["to_hash"], name="outbox_to"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.to}: {(self.subject or self.text)[:60]}"


class ProviderEvent(models.Model):
    """Provider events already applied, so a webhook's retry changes nothing twice."""

    provider = models.CharField(max_length=40)
    event_key = models.CharField(max_length=255)
    received_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_key"], name="provider_event_unique")
        ]


# Devices and the outbound webhooks' tables live in modules of their own; imported here so
# Django finds them.
from notifications.device_models import Device  # noqa: E402, F401
from notifications.webhook_models import (  # noqa: E402, F401
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)
