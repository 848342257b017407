from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from communication.api.validation import InputSerializer
from communication.exceptions import APIError, ScopeMissingError
from communication.models import normalize_e164
from communication.org_models import ORG_ID_RE
from notifications.escalation import escalation_clean
from notifications.models import Channel, Notification, Priority


class RecipientSerializer(serializers.Serializer):
    """Exactly one of ``user_id``, ``email``, ``phone``, ``organization``."""

    user_id = serializers.CharField(required=False, max_length=255)
    email = serializers.EmailField(required=False, max_length=320)
    phone = serializers.CharField(required=False, max_length=32)
    organization = serializers.CharField(
        required=False,
        max_length=128,
        help_text="Every member of the organization, each with their own notification "
        "(scope notifications:broadcast).",
    )
    include_descendants = serializers.BooleanField(
        required=False, default=False, help_text="With organization: its sub-organizations too."
    )
    roles = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        help_text="With organization: only members holding any of these roles.",
    )

    def validate_phone(self, value):
        try:
            return normalize_e164(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages[0]) from exc

    def validate(self, attrs):
        given = [k for k in ("user_id", "email", "phone", "organization") if attrs.get(k)]
        if len(given) != 1:
            raise serializers.ValidationError(
                "Give exactly one of user_id, email, phone, organization."
            )
        return attrs


_email_field = serializers.EmailField(max_length=320)


def _clean_recipient(item) -> dict:
    """One recipient, validated like RecipientSerializer (which documents the shape) but without
    building a serializer per entry: a request may carry a thousand of them."""
    if not isinstance(item, dict):
        raise serializers.ValidationError("Expected an object.")
    if "organization" in item:
        return _clean_organization(item)
    given = [k for k in ("user_id", "email", "phone") if item.get(k)]
    if len(given) != 1:
        raise serializers.ValidationError("Give exactly one of user_id, email, phone.")
    (key,) = given
    value = item[key]
    if not isinstance(value, str):
        raise serializers.ValidationError({key: ["Expected a string."]})
    if key == "user_id":
        if len(value) > 255:
            raise serializers.ValidationError({key: ["At most 255 characters."]})
        return {"user_id": value}
    if key == "email":
        try:
            return {"email": _email_field.run_validation(value)}
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"email": exc.detail}) from exc
    try:
        return {"phone": normalize_e164(value)}
    except DjangoValidationError as exc:
        raise serializers.ValidationError({"phone": [exc.messages[0]]}) from exc


ORGANIZATION_KEYS = frozenset({"organization", "include_descendants", "roles", "data"})


def _clean_organization(item: dict) -> dict:
    """An organization-wide recipient: ``{"organization": id, "include_descendants": bool,
    "roles": [...]}`` (``data`` beside it: a bulk row's own variables)."""
    extra = sorted(set(item) - ORGANIZATION_KEYS)
    if extra:
        raise serializers.ValidationError(
            f"An organization recipient takes organization, include_descendants and roles; "
            f"not {', '.join(extra)}."
        )
    org_id = item["organization"]
    if not isinstance(org_id, str) or not ORG_ID_RE.match(org_id):
        raise serializers.ValidationError(
            {"organization": ["An organization id: 1 to 128 characters, no slash or space."]}
        )
    descendants = item.get("include_descendants", False)
    if not isinstance(descendants, bool):
        raise serializers.ValidationError({"include_descendants": ["Expected true or false."]})
    roles = item.get("roles")
    if roles is None:
        roles = []
    if not isinstance(roles, list) or not all(
        isinstance(r, str) and 0 < len(r) <= 64 for r in roles
    ):
        raise serializers.ValidationError({"roles": ["Expected a list of role names."]})
    return {
        "organization": org_id,
        "include_descendants": descendants,
        "roles": sorted(set(roles)),
    }


def addresses_organization(recipients: Any) -> bool:
    """Whether the raw ``recipients`` of a send name an organization (the scope
    ``notifications:broadcast`` is then needed, checked before the body)."""
    return isinstance(recipients, list) and any(
        isinstance(r, dict) and "organization" in r for r in recipients
    )


def check_broadcast_scope(principal: Any, recipients: Any) -> None:
    """403 ``scope_missing`` for an organization-wide send by a service without
    ``notifications:broadcast``."""
    if addresses_organization(recipients) and BROADCAST_SCOPE not in principal.scopes:
        raise ScopeMissingError(
            f"Organization-wide recipients need the scope {BROADCAST_SCOPE} "
            "(beside notifications:send)."
        )


BROADCAST_SCOPE = "notifications:broadcast"


@extend_schema_field(RecipientSerializer(many=True))
class RecipientsField(serializers.Field):
    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError("Expected a list of recipients.")
        if not data:
            raise serializers.ValidationError("This list may not be empty.")
        cleaned = []
        errors: dict[str, Any] = {}  # "0", not 0: a digit key names a position all the same
        for i, item in enumerate(data):
            try:
                cleaned.append(_clean_recipient(item))
            except serializers.ValidationError as exc:
                errors[str(i)] = exc.detail
        if errors:
            raise serializers.ValidationError(errors)
        return cleaned

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": ["auto"]},
            {"type": "array", "items": {"type": "string", "enum": list(Channel.values)}},
        ]
    }
)
class ChannelsField(serializers.Field):
    def to_internal_value(self, data):
        if data == "auto":
            return "auto"
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError('A list of channels, or "auto".')
        bad = [c for c in data if c not in Channel.values]
        if bad:
            raise serializers.ValidationError(
                f"Unknown channel(s): {', '.join(map(str, bad))}; use {', '.join(Channel.values)}."
            )
        return list(dict.fromkeys(data))

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "channel": {"type": "string", "enum": list(Channel.values)},
                "after": {
                    "type": "string",
                    "description": "30s, 10m, 1h, 2d or ISO 8601 (PT10M); none on the first step",
                },
            },
            "required": ["channel"],
        },
    }
)
class EscalationField(serializers.Field):
    """The channels tried in turn until the notification is read (``notifications.escalation``:
    its errors are 400s with the code ``invalid_escalation``)."""

    def to_internal_value(self, data):
        return escalation_clean(data)

    def to_representation(self, value):
        return value


def check_escalation(attrs: dict[str, Any]) -> None:
    """An escalation names its channels and times itself: ``channels`` and ``scheduled_at``
    beside it are refused (``escalation_conflict``) rather than one silently winning."""
    if not attrs.get("escalation"):
        return
    for field in ("channels", "scheduled_at"):
        given = attrs.get(field)
        if given not in (None, "auto"):
            raise APIError(
                f"Give escalation or {field}, not both: the escalation names its channels "
                "and when each goes.",
                code="escalation_conflict",
                fields={field: ["Not with escalation."]},
            )


class ContentSerializer(serializers.Serializer):
    subject = serializers.CharField(required=False, allow_blank=True, max_length=998)
    title = serializers.CharField(required=False, allow_blank=True, max_length=500)
    body = serializers.CharField(required=False, allow_blank=True, max_length=100_000)
    text = serializers.CharField(required=False, allow_blank=True, max_length=100_000)
    html = serializers.CharField(required=False, allow_blank=True, max_length=1_000_000)
    action_url = serializers.URLField(required=False, allow_blank=True, max_length=2000)
    image = serializers.URLField(required=False, allow_blank=True, max_length=2000)
    deep_link = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    # DRF's metaclass takes declared fields off the class, so a field named like a Serializer or
    # Field attribute (``data``, ``source``) shadows nothing; the stubs cannot see that.
    data = serializers.DictField(required=False)  # type: ignore[assignment]


class SendSerializer(InputSerializer):
    recipients = RecipientsField()
    category = serializers.SlugField(required=False, default="transactional")
    channels = ChannelsField(required=False, default="auto")
    template = serializers.SlugField(required=False, max_length=100)
    content = ContentSerializer(required=False)
    data = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]  # see above
    locale = serializers.CharField(required=False, allow_blank=True, max_length=35, default="")
    priority = serializers.ChoiceField(
        choices=Priority.choices, required=False, default=Priority.NORMAL
    )
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    scheduled_local = serializers.BooleanField(required=False, default=False)
    escalation = EscalationField(required=False)
    # DRF's CharField refuses NUL characters already.
    cancellation_key = serializers.CharField(required=False, allow_blank=True, max_length=255)

    def validate(self, attrs):
        if bool(attrs.get("template")) == bool(attrs.get("content")):
            raise serializers.ValidationError(
                {"template": ["Give a template, or inline content, not both."]}
            )
        check_escalation(attrs)
        return attrs


class ScheduleSerializer(SendSerializer):
    scheduled_at = serializers.DateTimeField()

    def validate(self, attrs):
        if not attrs["scheduled_local"] and attrs["scheduled_at"] <= timezone.now():
            raise serializers.ValidationError({"scheduled_at": ["Must be in the future."]})
        return super().validate(attrs)


class BroadcastSerializer(SendSerializer):
    """``POST /organizations/{id}/broadcast``: a send to the organization's members by a user.
    The send's own fields (the organization is the one recipient, from the URL), now only."""

    # None removes the field declared by SendSerializer (DRF's metaclass).
    recipients = None  # type: ignore[assignment]
    scheduled_at = None  # type: ignore[assignment]
    scheduled_local = None  # type: ignore[assignment]
    escalation = None  # type: ignore[assignment]
    cancellation_key = None  # type: ignore[assignment]
    include_descendants = serializers.BooleanField(
        required=False, default=False, help_text="The organizations under it too."
    )
    roles = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        default=list,
        max_length=100,
        help_text="Only members holding any of these roles (empty: every member).",
    )

    def to_internal_value(self, data):
        # A key this endpoint does not take (``recipients``, ``scheduled_at``…) is refused
        # rather than ignored: the sender would believe it applied.
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: ["Not accepted by this endpoint."] for key in unknown}
                )
        return super().to_internal_value(data)


class DeliveryOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    channel = serializers.CharField()
    status = serializers.CharField()
    reason = serializers.CharField(allow_null=True)
    scheduled_for = serializers.DateTimeField(allow_null=True)
    possibly_duplicate = serializers.BooleanField(
        help_text="Sent again after a worker died during its provider call: the recipient may "
        "have received it twice."
    )


class NotificationOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    recipient = serializers.DictField()
    deliveries = DeliveryOutSerializer(many=True)


class RequestOutSerializer(serializers.Serializer):
    request_id = serializers.UUIDField()
    status = serializers.CharField()
    category = serializers.CharField()
    priority = serializers.CharField()
    created_at = serializers.DateTimeField(allow_null=True)
    notifications = NotificationOutSerializer(many=True)


class RequestSummarySerializer(serializers.Serializer):
    request_id = serializers.UUIDField(source="id")
    category = serializers.CharField(source="category_id")
    template = serializers.CharField(source="template_key")
    priority = serializers.CharField()
    scheduled_at = serializers.DateTimeField()
    cancelled_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()
    recipients = serializers.IntegerField(source="recipient_count")


class RescheduleSerializer(serializers.Serializer):
    scheduled_at = serializers.DateTimeField()


class InboxItemSerializer(serializers.ModelSerializer):
    category = serializers.CharField(source="category_id")
    read = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = [
            "id",
            "title",
            "body",
            "category",
            "action_url",
            "data",
            "read",
            "read_at",
            "created_at",
        ]

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_read(self, obj) -> bool:
        return obj.read_at is not None


class UnreadSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    results = InboxItemSerializer(many=True)


class ReadAllSerializer(serializers.Serializer):
    marked = serializers.IntegerField(help_text="How many notifications this marked read.")


class PreferenceSerializer(serializers.Serializer):
    """One change. ``enabled`` alone keeps a digest mode (false: off); ``mode`` alone sets
    ``enabled``. The service checks modes, times and weekdays and answers each problem with its
    own code (invalid_mode, invalid_digest_time, invalid_digest_weekday, inconsistent_mode,
    mode_not_allowed)."""

    category = serializers.SlugField()
    channel = serializers.ChoiceField(choices=Channel.choices)
    enabled = serializers.BooleanField(required=False)
    # No length or choice here: the service answers a bad one with its own code.
    mode = serializers.CharField(
        required=False, trim_whitespace=False, help_text="immediate, hourly, daily, weekly or off"
    )
    digest_time = serializers.CharField(
        required=False,
        allow_null=True,
        trim_whitespace=False,
        help_text="HH:MM in the user's time zone (null: the category's)",
    )
    digest_weekday = serializers.JSONField(
        required=False, help_text="0 Monday … 6 Sunday (null: the category's)"
    )

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        # A key absent stays absent (the service tells "not given" from null).
        return {k: v for k, v in value.items() if k in data or k in ("category", "channel")}


class QuietHoursSerializer(serializers.Serializer):
    start = serializers.TimeField(allow_null=True)
    end = serializers.TimeField(allow_null=True)
    enabled = serializers.BooleanField(default=True)

    def validate(self, attrs):
        if (attrs.get("start") is None) != (attrs.get("end") is None):
            raise serializers.ValidationError("Give both start and end, or neither.")
        if attrs.get("start") is not None and attrs["start"] == attrs["end"]:
            raise serializers.ValidationError("start and end must differ.")
        return attrs


class PreferencesSerializer(serializers.Serializer):
    # Categories by channels is a few dozen: a longer list is a mistake (or an attack on the
    # one update per item).
    # (The stubs type many=True's ListSerializer arguments as the child's.)
    preferences = PreferenceSerializer(  # type: ignore[call-arg]
        many=True, required=False, default=list, max_length=200
    )
    quiet_hours = QuietHoursSerializer(required=False, allow_null=True)


class ConsentSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    channel = serializers.ChoiceField(
        choices=Channel.choices,
        required=False,
        allow_blank=True,
        default="",
        help_text="empty: every channel",
    )
    category = serializers.SlugField(
        required=False, allow_null=True, default=None, source="category_id"
    )
    granted = serializers.BooleanField()
    source = serializers.CharField(max_length=64)  # type: ignore[assignment]  # see ContentSerializer
    evidence = serializers.DictField(required=False, default=dict)
    created_at = serializers.DateTimeField(read_only=True)


class ChannelModeSerializer(serializers.Serializer):
    mode = serializers.CharField(help_text="immediate, hourly, daily, weekly or off")
    digest_time = serializers.CharField(help_text="HH:MM in the user's time zone")
    digest_weekday = serializers.IntegerField(help_text="0 Monday … 6 Sunday")


class FrequencyCapSerializer(serializers.Serializer):
    limit = serializers.IntegerField()
    period = serializers.CharField(help_text='A whole number and m, h or d, like "7d".')


class CategoryPreferenceSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    mandatory = serializers.BooleanField()
    requires_consent = serializers.BooleanField()
    channels = serializers.DictField(child=serializers.BooleanField())
    # What the category promises: at most "limit" messages per "period" on each channel listed.
    frequency_caps = serializers.DictField(child=FrequencyCapSerializer())
    modes = serializers.DictField(
        child=ChannelModeSerializer(), help_text="per channel: how often, and when"
    )


class DigestItemSerializer(serializers.Serializer):
    delivery_id = serializers.UUIDField()
    notification_id = serializers.UUIDField()
    category = serializers.CharField()
    title = serializers.CharField()
    summary = serializers.CharField()
    url = serializers.CharField()
    created_at = serializers.DateTimeField()
    reason = serializers.CharField(help_text="e.g. daily digest, quiet hours")


class DigestChannelSerializer(serializers.Serializer):
    channel = serializers.CharField()
    next_send_at = serializers.DateTimeField()
    count = serializers.IntegerField(help_text="Every item held on this channel")
    items = DigestItemSerializer(many=True, help_text="The newest, newest first (bounded)")


class DigestOutSerializer(serializers.Serializer):
    channels = DigestChannelSerializer(many=True)


class PreferencesOutSerializer(serializers.Serializer):
    """The user's preferences: every category with its channels, quiet hours, time zone."""

    categories = CategoryPreferenceSerializer(many=True)
    quiet_hours = QuietHoursSerializer(allow_null=True)
    timezone = serializers.CharField()


class OutboxSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    delivery_id = serializers.UUIDField(allow_null=True)
    channel = serializers.CharField()
    to = serializers.CharField()
    subject = serializers.CharField()
    text = serializers.CharField()
    html = serializers.CharField()
    payload = serializers.DictField()
    created_at = serializers.DateTimeField()
