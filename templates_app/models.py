"""Templates, their versions (one per language and edit) and A/B variants.

A version is written as a draft, submitted, approved by someone other than its author, and from
then on never changes. Per template, variant and language exactly one approved version is *live*:
the database holds that rule with a partial unique index, so two concurrent approvals cannot
both win.
"""

from __future__ import annotations

import re
import uuid

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Now

from templates_app.engine import INJECTION_NAMES
from templates_app.variables import VariableError, coerce

# Path segments of /api/v1/templates/<word> that are not template keys.
RESERVED_KEYS = frozenset({"categories", "versions", "preview", "render"})

KEY_RE = r"^[a-z0-9][a-z0-9_-]*$"
LANGUAGE_RE = r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|[0-9]{3}))?$"

# Names a template can never be given as variables: Jinja's own, and the usual first steps of a
# template-injection attempt (the sandbox refuses them anyway; refusing the name is clearer).
RESERVED_VARIABLES = INJECTION_NAMES | frozenset(
    {
        "loop",
        "super",
        "caller",
        "varargs",
        "kwargs",
        "range",
        "dict",
        "namespace",
        "true",
        "false",
        "none",
        "True",
        "False",
        "None",
    }
)

VARIABLE_TYPES = (
    "string",
    "integer",
    "number",
    "boolean",
    "date",
    "datetime",
    "url",
    "email",
    "list",
    "object",
)


def validate_key(value: str) -> None:
    if value in RESERVED_KEYS:
        raise ValidationError(f"{value!r} is a reserved word and cannot be a template key.")


def normalize_language(value: str) -> str:
    """``fr_ca`` / ``FR-ca`` → ``fr-CA``; ``zh-hant-tw`` → ``zh-Hant-TW``."""
    parts = re.split(r"[-_]", value.strip())
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())
        else:
            out.append(part.upper())
    return "-".join(p for p in out if p)


def validate_language(value: str) -> None:
    if not re.match(LANGUAGE_RE, value):
        raise ValidationError(f"{value!r} is not a language tag like 'en' or 'fr-CA'.")


def validate_variables(value) -> None:
    """The variable schema: a list of ``{name, type, required, example, description}``."""
    if not isinstance(value, list):
        raise ValidationError("Variables must be a list.")
    seen = set()
    for i, item in enumerate(value):
        where = f"variables[{i}]"
        if not isinstance(item, dict):
            raise ValidationError(f"{where} must be an object.")
        unknown = set(item) - {"name", "type", "required", "example", "description"}
        if unknown:
            raise ValidationError(f"{where} has unknown keys: {', '.join(sorted(unknown))}.")
        name = item.get("name")
        if not isinstance(name, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,63}$", name):
            raise ValidationError(
                f"{where}.name must be an identifier (a letter, then letters, digits or _)."
            )
        if name in RESERVED_VARIABLES:
            raise ValidationError(f"{where}.name {name!r} is reserved.")
        if name in seen:
            raise ValidationError(f"Variable {name!r} is declared twice.")
        seen.add(name)
        if item.get("type", "string") not in VARIABLE_TYPES:
            raise ValidationError(f"{where}.type must be one of {', '.join(VARIABLE_TYPES)}.")
        if not isinstance(item.get("required", True), bool):
            raise ValidationError(f"{where}.required must be true or false.")
        if "example" in item:
            try:
                coerce(item, item["example"])
            except VariableError as exc:
                raise ValidationError(f"{where}.example: {exc.message}") from exc


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    PUSH = "push", "Push"
    IN_APP = "in_app", "In-app"
    CHAT = "chat", "Chat"


# The fields a version of each channel renders; the first ones listed are required.
CHANNEL_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    Channel.EMAIL: (("subject", "html"), ("text",)),
    Channel.SMS: (("text",), ()),
    Channel.PUSH: (("title", "body"), ("data", "image", "deep_link")),
    Channel.IN_APP: (("title", "body"), ("action_url",)),
    Channel.CHAT: (("body",), ()),
}
# The longest source each field may hold, in characters: the API and the console both save
# through the services, which hold them to these.
SOURCE_MAX_LENGTHS: dict[str, int] = {
    "subject": 500,
    "html": 200_000,
    "text": 50_000,
    "title": 500,
    "body": 50_000,
    "image": 2000,
    "deep_link": 2000,
    "action_url": 2000,
}


class Template(models.Model):
    """A message the service knows how to write, on one channel, in several languages."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.CharField(
        max_length=100,
        unique=True,
        validators=[RegexValidator(KEY_RE, "Lowercase letters, digits, - and _."), validate_key],
        help_text="Stable identifier services render by, e.g. 'password-reset-email'.",
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.ForeignKey(
        "communication.Category", on_delete=models.PROTECT, related_name="templates"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    default_language = models.CharField(max_length=35, default="en", validators=[validate_language])
    variables = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_variables],
        help_text='[{"name": "first_name", "type": "string", "required": true, "example": "Ada"}]',
    )
    active = models.BooleanField(default=True)
    sms_max_segments = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Most SMS segments a render may take (default: TEMPLATES_SMS_MAX_SEGMENTS).",
    )
    created_by = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("key",)
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(key__in=sorted(RESERVED_KEYS)), name="template_key_not_reserved"
            ),
            models.CheckConstraint(
                condition=models.Q(key__regex=KEY_RE), name="template_key_format"
            ),
            models.CheckConstraint(
                condition=models.Q(channel__in=Channel.values), name="template_channel_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.key


class TemplateVariant(models.Model):
    """One arm of an A/B test: its own versions, shown to ``weight`` / total of the recipients."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="variants")
    key = models.CharField(
        max_length=32, validators=[RegexValidator(KEY_RE, "Lowercase letters, digits, - and _.")]
    )
    weight = models.PositiveIntegerField(default=1)
    active = models.BooleanField(default=True)
    description = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        ordering = ("template", "key")
        constraints = [
            models.UniqueConstraint(fields=["template", "key"], name="variant_key_unique"),
            models.CheckConstraint(
                condition=models.Q(weight__gt=0), name="variant_weight_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.template.key}:{self.key}"


class VersionStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PENDING = "pending_approval", "Pending approval"
    APPROVED = "approved", "Approved"
    ARCHIVED = "archived", "Archived"


class TemplateVersion(models.Model):
    """The text of a template in one language, for one variant (or the main line).

    Immutable once approved: services refuse to change it and the admin shows it read-only.
    ``created_by`` and the other actors are ``user:<id>`` or ``service:<client_id>``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="versions")
    variant = models.ForeignKey(
        TemplateVariant,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="versions",
    )
    language = models.CharField(max_length=35, validators=[validate_language])
    number = models.PositiveIntegerField(help_text="1, 2, 3… per template.")
    status = models.CharField(
        max_length=20, choices=VersionStatus.choices, default=VersionStatus.DRAFT
    )
    is_live = models.BooleanField(default=False)
    live_since = models.DateTimeField(null=True, blank=True)

    # Email
    subject = models.CharField(max_length=500, blank=True)
    html = models.TextField("HTML body", blank=True)
    # Email text alternative (generated from the HTML when blank), SMS text
    text = models.TextField(blank=True)
    # Push, in-app, chat
    title = models.CharField(max_length=500, blank=True)
    body = models.TextField(blank=True)
    data = models.JSONField(
        default=dict, blank=True, help_text="Push payload data; string values are templates."
    )
    image = models.CharField(max_length=2000, blank=True)
    deep_link = models.CharField(max_length=2000, blank=True)
    action_url = models.CharField(max_length=2000, blank=True)

    note = models.TextField(blank=True, help_text="What changed and why (the author's note).")
    review_note = models.TextField(blank=True)
    created_by = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)
    submitted_by = models.CharField(max_length=255, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.CharField(max_length=255, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    rejected_by = models.CharField(max_length=255, blank=True)
    rejected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("template", "-number")
        indexes = [models.Index(fields=["template", "language", "status"])]
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="version_number_unique"),
            models.UniqueConstraint(
                fields=["template", "variant", "language"],
                condition=models.Q(is_live=True),
                nulls_distinct=False,
                name="version_one_live_per_language",
            ),
            models.CheckConstraint(
                condition=models.Q(is_live=False) | models.Q(status=VersionStatus.APPROVED),
                name="version_live_is_approved",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=VersionStatus.values), name="version_status_valid"
            ),
            models.CheckConstraint(
                condition=~models.Q(status=VersionStatus.APPROVED)
                | (~models.Q(approved_by="") & models.Q(approved_at__isnull=False)),
                name="version_approved_has_approver",
            ),
        ]

    def __str__(self) -> str:
        variant = f"/{self.variant.key}" if self.variant is not None else ""
        return f"{self.template.key}{variant} v{self.number} [{self.language}]"

    @property
    def editable(self) -> bool:
        return self.status == VersionStatus.DRAFT

    def source_fields(self, channel: str) -> dict:
        """The template sources this version renders for ``channel``."""
        required, optional = CHANNEL_FIELDS[channel]
        return {name: getattr(self, name) for name in required + optional}
