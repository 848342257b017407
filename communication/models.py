from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import ClassVar, Self

import pgtrigger
import phonenumbers
from django.contrib.auth.models import AbstractUser, UserManager
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.functions import Now

from communication.fields import EncryptedJSONField


def validate_e164(value: str) -> None:
    """Phone numbers are stored in E.164 (``+33612345678``); anything else is refused."""
    if value and normalize_e164(value) != value:
        raise ValidationError(f"{value!r} is not in E.164 form (like +33612345678)")


def normalize_e164(value: str, region: str | None = None) -> str:
    """Returns ``value`` in E.164, or raises ValidationError."""
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(f"{value!r} is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(f"{value!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class User(AbstractUser):
    """A person: an identity-service user (``external_id`` = the token's ``sub``) or a staff account.

    ``external_id`` is the ``user_id`` every API speaks. Staff accounts made with ``createsuperuser``
    have none until they also sign in through the identity service.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    external_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    name = models.CharField("display name", max_length=255, blank=True)
    phone = models.CharField(max_length=20, blank=True, validators=[validate_e164])
    locale = models.CharField(max_length=35, blank=True)
    timezone = models.CharField(max_length=64, blank=True)
    organization = models.CharField(max_length=255, blank=True)
    roles = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    objects: ClassVar[UserManager[Self]] = UserManager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(phone="") | models.Q(phone__regex=r"^\+[1-9][0-9]{6,14}$"),
                name="user_phone_e164",
            ),
            models.CheckConstraint(
                condition=~models.Q(external_id=""), name="user_external_id_not_empty"
            ),
        ]
        indexes = [
            # The console's people list: newest first, and exact look-ups by address.
            models.Index(fields=["-created_at"], name="user_recent"),
            models.Index(fields=["email"], name="user_email", condition=~models.Q(email="")),
            models.Index(fields=["phone"], name="user_phone", condition=~models.Q(phone="")),
            # Who holds a role (the support agents the console offers): roles @> ARRAY[…].
            GinIndex(fields=["roles"], name="user_roles"),
        ]

    def __str__(self) -> str:
        return self.external_id or self.username

    @property
    def user_id(self) -> str | None:
        return self.external_id


def validate_channel_list(value) -> None:
    """A list of distinct channel names from ``Category.CHANNELS``."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Expected a list of channel names.")
    unknown = sorted(set(value) - set(Category.CHANNELS))
    if unknown:
        raise ValidationError(f"Unknown channel(s): {', '.join(unknown)}.")
    if len(set(value)) != len(value):
        raise ValidationError("A channel is listed twice.")


# How often a user hears about a category on a channel: at once, in a digest, or never.
DELIVERY_MODES = ("immediate", "hourly", "daily", "weekly", "off")
DIGEST_MODES = ("hourly", "daily", "weekly")


def validate_digest_modes(value) -> None:
    """``{channel: mode}``: the modes a category starts users on, per channel."""
    if not isinstance(value, dict):
        raise ValidationError("Expected an object of channel: mode.")
    for channel, mode in value.items():
        if channel not in Category.CHANNELS:
            raise ValidationError(f"Unknown channel {channel!r}.")
        if mode not in DELIVERY_MODES:
            raise ValidationError(
                f"Unknown mode {mode!r} for {channel}: one of {', '.join(DELIVERY_MODES)}."
            )
        if channel == "in_app" and mode in DIGEST_MODES:
            raise ValidationError("in_app is always immediate: its inbox item is the message.")


# The channels a worker hands to a provider: the only ones a frequency cap can be kept on
# (an in-app item is written when the send is accepted, never sent by a worker).
CAPPED_CHANNELS = ("email", "sms", "push")
# A window is a number and a unit: minutes, hours or days.
_PERIOD = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
# Bounds that keep the ledger small and the sliding window meaningful.
CAP_MAX_LIMIT = 1000
CAP_MAX_PERIOD_SECONDS = 366 * 86400


def cap_period_seconds(period: str) -> int:
    """``"7d"`` → 604800. Raises ValidationError on anything else (``validate_frequency_caps``)."""
    match = _PERIOD.match(period) if isinstance(period, str) else None
    if match is None:
        raise ValidationError(
            f'{period!r} is not a period: a whole number and m, h or d, like "7d" or "12h".'
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def validate_frequency_caps(value) -> None:
    """``{channel: {"limit": n, "period": "7d"}}``: at most ``limit`` messages of the category on
    ``channel`` to one person within any ``period`` (a sliding window)."""
    if not isinstance(value, dict):
        raise ValidationError(
            'Expected an object of channels, like {"email": {"limit": 3, "period": "7d"}}.'
        )
    errors = []
    for channel, cap in value.items():
        if channel not in CAPPED_CHANNELS:
            errors.append(
                f"{channel!r}: caps are kept on {', '.join(CAPPED_CHANNELS)} only"
                " (in-app items are written at acceptance, not sent by a worker)."
            )
            continue
        if not isinstance(cap, dict) or set(cap) != {"limit", "period"}:
            errors.append(f'{channel}: expected exactly {{"limit": n, "period": "7d"}}.')
            continue
        limit = cap["limit"]
        if type(limit) is not int or not 1 <= limit <= CAP_MAX_LIMIT:
            errors.append(f"{channel}: limit must be a whole number from 1 to {CAP_MAX_LIMIT}.")
        try:
            seconds = cap_period_seconds(cap["period"])
        except ValidationError as exc:
            errors.append(f"{channel}: {exc.messages[0]}")
        else:
            if not 60 <= seconds <= CAP_MAX_PERIOD_SECONDS:
                errors.append(f"{channel}: period must be from 1m to 366d.")
    if errors:
        raise ValidationError(errors)


class Category(models.Model):
    """What a message is about; the vocabulary preferences, consent and templates share.

    ``default_channels`` lists the channels a user receives this category on until they say
    otherwise. A ``mandatory`` category (security, transactional) cannot be opted out of; a
    category that ``requires_consent`` (marketing) is sent only to users who opted in.
    """

    # Every channel the service speaks; apps keep their own choices within this list.
    CHANNELS = ("email", "sms", "push", "web_push", "in_app", "chat")

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    default_channels = models.JSONField(
        default=list, blank=True, validators=[validate_channel_list]
    )
    mandatory = models.BooleanField(default=False)
    requires_consent = models.BooleanField(default=False)
    tracking_allowed = models.BooleanField(default=True)
    # ``{channel: {"limit": 3, "period": "7d"}}``, kept per person by the delivery worker
    # (``notifications.services.caps``). A mandatory category has none: it must always arrive.
    frequency_caps = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_frequency_caps],
        help_text='Per channel, at most "limit" messages to one person in any "period" '
        '(m, h or d), e.g. {"email": {"limit": 3, "period": "7d"}}. Empty: no cap.',
    )
    position = models.PositiveSmallIntegerField(default=0)
    # The delivery mode a user starts with per channel (absent: immediate), and when that
    # user's digest goes out (their own time zone) until they choose otherwise.
    digest_modes = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_digest_modes],
        help_text='Per channel: immediate, hourly, daily, weekly or off, e.g. {"email": "daily"}.',
    )
    digest_time = models.TimeField(
        default=dt.time(8, 0),
        help_text="Local time of a daily or weekly digest; its minute is an hourly one's.",
    )
    digest_weekday = models.PositiveSmallIntegerField(
        default=0, help_text="Weekday of a weekly digest: 0 Monday … 6 Sunday."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("position", "key")
        verbose_name_plural = "categories"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(digest_weekday__lte=6), name="category_digest_weekday"
            ),
            models.CheckConstraint(
                condition=~(models.Q(mandatory=True) & models.Q(requires_consent=True)),
                name="category_mandatory_xor_consent",
            ),
            models.CheckConstraint(
                condition=~(models.Q(mandatory=True) & ~models.Q(frequency_caps={})),
                name="category_mandatory_uncapped",
                violation_error_message="A mandatory category cannot have frequency caps.",
            ),
        ]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        # An emptied console field arrives as None or "" (never validated: an empty value).
        self.frequency_caps = self.frequency_caps or {}
        if self.mandatory and self.frequency_caps:
            raise ValidationError(
                {
                    "frequency_caps": "A mandatory category (security, transactional) must always"
                    " arrive: it cannot have frequency caps."
                }
            )


class UserSequence(models.Model):
    """The last realtime sequence number given to a user's events (gap-free per user)."""

    user = models.OneToOneField(
        "communication.User", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    last_seq = models.BigIntegerField(default=0)


class RealtimeEvent(models.Model):
    """A persisted websocket event, so a client that reconnects receives what it missed.

    Kept for ``RETENTION_REALTIME_DAYS`` (the retention run); a client resuming from
    before the oldest kept gets ``resync_required``.
    """

    id = models.BigAutoField(primary_key=True)
    # The (user, seq) unique index serves the foreign key: no index of its own.
    user = models.ForeignKey(
        "communication.User", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    seq = models.BigIntegerField()
    type = models.CharField(max_length=64)
    # What a replay shows is ``{**sealed, **data}``: ``sealed`` (encrypted) holds the payload,
    # ``data`` only what the statement that writes the event adds in SQL (a message's ids).
    data = models.JSONField(default=dict)
    sealed = EncryptedJSONField(null=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "seq"], name="realtime_event_seq")]
        indexes = [models.Index(fields=["created_at"], name="realtime_event_created")]

    @property
    def payload(self) -> dict:
        """The event's data as its live copy carried it."""
        return {**(self.sealed or {}), **self.data}


class WalFlush(models.Model):
    """Bumped by ``communication.adb.durable()``: a transaction that writes nothing else commits
    without waiting for the disk, so the flush that covers everything committed before it needs
    a row to write. One row per slot (process id modulo 64), so processes seldom queue for one."""

    slot = models.SmallIntegerField(primary_key=True)
    flushes = models.BigIntegerField(default=0)


class AuditEntry(models.Model):
    """One thing someone did: append-only, chained for tamper evidence by ``communication.audit``.

    ``changes`` names the fields that changed, with before/after values only where they are not
    personal (never secrets, tokens, message bodies, addresses or names). The table refuses UPDATE
    and DELETE (a trigger); the retention path lifts that for itself alone, leaving an anchor.
    """

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(db_default=Now())
    # "user:<user_id>", "service:<client_id>", "staff:<username>" or "system": no foreign key, so
    # the entry outlives the account and an erasure leaves it intact.
    actor = models.CharField(max_length=300)
    action = models.CharField(max_length=64)  # "<noun>.<verb>": "template.approve", "erasure.run"
    object_type = models.CharField(max_length=64)  # "<app_label>.<model>" or a noun
    object_id = models.CharField(max_length=255, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True)

    class Meta:
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["actor", "-id"], name="audit_actor"),
            models.Index(fields=["object_type", "object_id", "-id"], name="audit_object"),
            models.Index(fields=["action", "-id"], name="audit_action"),
            models.Index(fields=["at"], name="audit_at"),
        ]
        triggers = [
            pgtrigger.Protect(
                name="audit_append_only", operation=pgtrigger.Update | pgtrigger.Delete
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id} by {self.actor}"


class AuditSeal(models.Model):
    """One link of the audit chain: the entry ``entry_id`` sealed at position ``seq``.

    ``hash`` covers the entry's content, ``seq`` and ``prev_hash`` (the hash of link ``seq - 1``,
    or of the anchor the chain resumes from after retention). The chain is kept in its own table
    so that writers insert entries without waiting on one another: the chainer appends links in
    id order as entries become visible, and an entry whose transaction commits late is sealed at
    a later position. Insert-only, as the entries are.
    """

    seq = models.BigIntegerField(primary_key=True)
    # No foreign key: an entry deleted behind the trigger's back must leave its link dangling for
    # verify_audit to report, not take the link with it.
    entry_id = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    prev_hash = models.CharField(max_length=64)
    sealed_at = models.DateTimeField(db_default=Now())

    class Meta:
        triggers = [
            pgtrigger.Protect(
                name="audit_seal_append_only", operation=pgtrigger.Update | pgtrigger.Delete
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} entry {self.entry_id}"


class AuditAnchor(models.Model):
    """Where the chain resumes after retention removed its oldest links: the last removed link's
    ``seq`` and ``hash``, signed with ``SECRET_KEY`` so that a forged anchor fails verification.
    Insert-only."""

    id = models.BigAutoField(primary_key=True)
    seq = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    signature = models.CharField(max_length=64)
    removed = models.BigIntegerField()  # entries removed by the expiry that left this anchor
    before = models.DateTimeField()  # the expiry's cut-off
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        triggers = [
            pgtrigger.Protect(
                name="audit_anchor_append_only", operation=pgtrigger.Update | pgtrigger.Delete
            ),
        ]

    def __str__(self) -> str:
        return f"anchor at #{self.seq}"


class ErasureRequest(models.Model):
    """A right-to-erasure request and what it erased.

    The subject is kept only as a keyed hash (``LOOKUP_HASH_KEY``) of the identifier the
    caller gave, so this record cannot say whom it was about to anyone without the key.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subject_kind = models.CharField(max_length=8)  # user_id, email, phone
    subject_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    erased = models.JSONField(default=dict, blank=True)  # {"<app>.<kind>": n}
    already_erased = models.BooleanField(default=False)
    requested_by = models.CharField(max_length=300)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["subject_hash", "-created_at"], name="erasure_subject")]

    def __str__(self) -> str:
        return f"erasure {self.id} ({self.status})"


# The organization tree lives in a module of its own (this one nears 700 lines).
from communication.org_models import Organization  # noqa: E402, F401
