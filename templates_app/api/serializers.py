from __future__ import annotations

import re
import zoneinfo

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from communication.models import Category
from templates_app.models import (
    KEY_RE,
    LANGUAGE_RE,
    RESERVED_KEYS,
    SOURCE_MAX_LENGTHS,
    VARIABLE_TYPES,
    Channel,
    Template,
    TemplateVersion,
    normalize_language,
    validate_variables,
)
from templates_app.services import SOURCE_FIELDS


def _language(value: str) -> str:
    value = normalize_language(value)
    if not re.match(LANGUAGE_RE, value):
        raise serializers.ValidationError(f"{value!r} is not a language tag like 'en' or 'fr-CA'.")
    return value


class LanguageField(serializers.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 35)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        return _language(super().to_internal_value(data))


class TimezoneField(serializers.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 64)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise serializers.ValidationError(f"{value!r} is not a time zone.") from exc
        return value


# DRF's metaclass takes declared fields off the class, so a field named like a Serializer or Field
# attribute (``data``, ``fields``, ``required``) shadows nothing; the stubs cannot see that, hence
# the ``type: ignore[assignment]`` on such fields below.


class TemplateVariableSerializer(serializers.Serializer):
    """One variable of a template's schema (documentation of the ``variables`` field)."""

    name = serializers.CharField()
    type = serializers.ChoiceField(choices=list(VARIABLE_TYPES), default="string")
    required = serializers.BooleanField(default=True)  # type: ignore[assignment]  # see the top
    example = serializers.JSONField(required=False)
    description = serializers.CharField(required=False)


@extend_schema_field(TemplateVariableSerializer(many=True))
class VariablesField(serializers.JSONField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            validate_variables(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc
        return value


class TemplateCategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = [
            "key",
            "name",
            "description",
            "default_channels",
            "mandatory",
            "requires_consent",
            "tracking_allowed",
            "frequency_caps",
        ]
        read_only_fields = fields


class TemplateLiveVersionSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    number = serializers.IntegerField()
    language = serializers.CharField()
    variant = serializers.SerializerMethodField()
    live_since = serializers.DateTimeField()

    def get_variant(self, obj) -> str | None:
        return obj.variant.key if obj.variant_id else None


class TemplateVariantSerializer(serializers.Serializer):
    key = serializers.CharField()
    weight = serializers.IntegerField()
    active = serializers.BooleanField()
    description = serializers.CharField()


class TemplateSerializer(serializers.ModelSerializer):
    category: serializers.SlugRelatedField[Category] = serializers.SlugRelatedField(
        slug_field="key", read_only=True
    )
    variables = VariablesField(read_only=True)
    languages = serializers.SerializerMethodField(
        help_text="Languages with a live version (of the main line)."
    )

    class Meta:
        model = Template
        fields = [
            "key",
            "name",
            "description",
            "category",
            "channel",
            "default_language",
            "variables",
            "active",
            "sms_max_segments",
            "languages",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_languages(self, obj) -> list[str]:
        return sorted({v.language for v in obj.live_versions if not v.variant_id})


class TemplateDetailSerializer(TemplateSerializer):
    live = serializers.SerializerMethodField()
    variants = TemplateVariantSerializer(many=True, read_only=True)

    class Meta(TemplateSerializer.Meta):
        fields = TemplateSerializer.Meta.fields + ["live", "variants"]
        read_only_fields = fields

    @extend_schema_field(TemplateLiveVersionSerializer(many=True))
    def get_live(self, obj):
        return TemplateLiveVersionSerializer(obj.live_versions, many=True).data


class TemplateCreateSerializer(serializers.Serializer):
    key = serializers.RegexField(KEY_RE, max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    category = serializers.SlugField()
    channel = serializers.ChoiceField(choices=Channel.choices)
    default_language = LanguageField(required=False, default="en")
    variables = VariablesField(required=False, default=list)  # type: ignore[arg-type]  # stubs: a JSONField default is a mapping; a list is JSON too
    active = serializers.BooleanField(required=False, default=True)
    sms_max_segments = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=20, default=None
    )

    def validate_key(self, value: str) -> str:
        if value in RESERVED_KEYS:
            raise serializers.ValidationError(f"{value!r} is reserved and cannot be a key.")
        return value


class TemplateUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    category = serializers.SlugField(required=False)
    default_language = LanguageField(required=False)
    variables = VariablesField(required=False)
    active = serializers.BooleanField(required=False)
    sms_max_segments = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=20
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            fixed = sorted({"key", "channel"} & set(data))
            if fixed:
                raise serializers.ValidationError(
                    {f: ["This field cannot be changed."] for f in fixed}
                )
        return super().to_internal_value(data)


class TemplateVersionSerializer(serializers.ModelSerializer):
    template: serializers.SlugRelatedField[Template] = serializers.SlugRelatedField(
        slug_field="key", read_only=True
    )
    variant = serializers.SerializerMethodField()

    class Meta:
        model = TemplateVersion
        fields = [
            "id",
            "template",
            "variant",
            "language",
            "number",
            "status",
            "is_live",
            "live_since",
            *SOURCE_FIELDS,
            "note",
            "review_note",
            "created_by",
            "created_at",
            "submitted_by",
            "submitted_at",
            "approved_by",
            "approved_at",
            "rejected_by",
            "rejected_at",
        ]
        read_only_fields = fields

    def get_variant(self, obj) -> str | None:
        return obj.variant.key if obj.variant_id else None


def _source(name: str) -> serializers.CharField:
    return serializers.CharField(
        required=False, allow_blank=True, max_length=SOURCE_MAX_LENGTHS[name]
    )


class _TemplateSourceFields(serializers.Serializer):
    subject = _source("subject")
    html = _source("html")
    text = _source("text")
    title = _source("title")
    body = _source("body")
    image = _source("image")
    deep_link = _source("deep_link")
    action_url = _source("action_url")


class TemplateVersionCreateSerializer(_TemplateSourceFields):
    language = LanguageField()
    variant = serializers.CharField(required=False, allow_null=True, max_length=32)
    data = serializers.DictField(  # type: ignore[assignment]  # see the top
        required=False, help_text="Push payload data; string values are templates."
    )
    note = serializers.CharField(required=False, allow_blank=True, default="")


class TemplateVersionUpdateSerializer(_TemplateSourceFields):
    data = serializers.DictField(required=False)  # type: ignore[assignment]  # see the top
    note = serializers.CharField(required=False, allow_blank=True)


class TemplateReviewSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="")


class TemplateRollbackSerializer(serializers.Serializer):
    version = serializers.UUIDField()
    language = LanguageField(required=False)


class TemplatePreviewSerializer(_TemplateSourceFields):
    """Either a saved template (``template``, optionally ``version``) or an unsaved draft
    (``channel`` and its fields)."""

    template = serializers.CharField(required=False, max_length=100)
    version = serializers.UUIDField(required=False)
    channel = serializers.ChoiceField(choices=Channel.choices, required=False)
    push_data = serializers.DictField(
        required=False, help_text="An unsaved push draft's payload data (templates)."
    )
    data = serializers.DictField(required=False, default=dict, help_text="Sample data.")  # type: ignore[assignment]  # see the top
    locale = LanguageField(required=False)
    timezone = TimezoneField(required=False)

    def validate(self, attrs):
        if bool(attrs.get("template")) == bool(attrs.get("channel")):
            raise serializers.ValidationError(
                {"template": ["Give either a template key or a draft's channel, not both."]}
            )
        if attrs.get("version") and not attrs.get("template"):
            raise serializers.ValidationError({"version": ["A version needs its template."]})
        return attrs


class TemplateRenderSerializer(serializers.Serializer):
    template = serializers.CharField(max_length=100)
    data = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]  # see the top
    locale = LanguageField(required=False)
    timezone = TimezoneField(required=False)
    recipient = serializers.CharField(
        required=False, max_length=255, help_text="The user id the message is for."
    )


class TemplateSmsInfoSerializer(serializers.Serializer):
    encoding = serializers.ChoiceField(choices=["GSM-7", "UCS-2"])
    characters = serializers.IntegerField()
    units = serializers.IntegerField(help_text="Septets for GSM-7, UTF-16 code units for UCS-2.")
    segments = serializers.IntegerField()


class TemplateRenderedSerializer(serializers.Serializer):
    """A render or preview: the fields of the channel, plus SMS figures and warnings."""

    template = serializers.CharField(required=False)
    channel = serializers.CharField()
    version = serializers.CharField(required=False, allow_null=True)
    version_number = serializers.IntegerField(required=False)
    language = serializers.CharField(required=False)
    variant = serializers.CharField(required=False, allow_null=True)
    subject = serializers.CharField(required=False)
    html = serializers.CharField(required=False)
    text = serializers.CharField(required=False)
    title = serializers.CharField(required=False)
    body = serializers.CharField(required=False)
    data = serializers.DictField(required=False)  # type: ignore[assignment]  # see the top
    image = serializers.CharField(required=False)
    deep_link = serializers.CharField(required=False)
    action_url = serializers.CharField(required=False)
    sms = TemplateSmsInfoSerializer(required=False)
    warnings = serializers.ListField(child=serializers.CharField())


class TemplateErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
    fields = serializers.DictField(  # type: ignore[assignment]  # see the top
        child=serializers.ListField(child=serializers.CharField()), required=False
    )
