from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from campaigns import segments
from campaigns.models import Segment
from campaigns.selectors import RUNS_SHOWN
from campaigns.services.campaigns import MAX_DELAY, MAX_STEPS
from notifications.api.serializers import ChannelsField, ContentSerializer

RULES_SCHEMA = {
    "type": "object",
    "description": (
        'A rule: {"all": [rule, …]}, {"any": [rule, …]}, {"not": rule} or '
        '{"field": …, "op": …, "value": …}. Fields: locale, timezone, organization, roles, '
        'created_at, attributes.<key>, event.<type> (optional "campaign" / "step" ids), '
        "consent, consent.<channel>, preferences.<channel> (need a category); operators: eq, in, "
        "contains, gt, lt, "
        f"exists, within_days. At most {segments.MAX_RULES} rules, nested at most "
        f"{segments.MAX_DEPTH} deep."
    ),
    "example": {
        "all": [
            {"field": "locale", "op": "in", "value": ["fr", "fr-CA"]},
            {"field": "event.opened", "op": "within_days", "value": 30},
            {"not": {"field": "attributes.plan", "op": "eq", "value": "free"}},
        ]
    },
}


@extend_schema_field(RULES_SCHEMA)
class RulesField(serializers.JSONField):
    def to_internal_value(self, data: Any) -> Any:
        data = super().to_internal_value(data)
        segments.validate(data)
        return data


class SegmentSerializer(serializers.ModelSerializer):
    rules = RulesField()

    class Meta:
        model = Segment
        fields = ("id", "name", "description", "rules", "created_by", "created_at", "updated_at")
        read_only_fields = ("id", "created_by", "created_at", "updated_at")


class SegmentSampleSerializer(serializers.Serializer):
    user_id = serializers.CharField()
    locale = serializers.CharField()
    timezone = serializers.CharField()
    organization = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()


class SegmentPreviewSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    sample = SegmentSampleSerializer(many=True)


# ------------------------------------------------------------------------------------ campaigns

CONDITION_SCHEMA = {
    "type": "object",
    "description": (
        'Who gets the step: {"previous": "opened" | "clicked" | "not_opened" | "not_clicked"} '
        "(the recipient's history with the previous step), or a segment rule over the recipient "
        "(see segments); {} for everyone."
    ),
    "example": {"previous": "not_opened"},
}


@extend_schema_field(CONDITION_SCHEMA)
class ConditionField(serializers.JSONField):
    pass


class DelayField(serializers.IntegerField):
    """A step's delay in whole seconds (a duration in the database)."""

    def to_representation(self, value):
        return int(value.total_seconds())


class StepSerializer(serializers.Serializer):
    """A step, written nested in a campaign (all of them at once, while the campaign is a
    draft)."""

    id = serializers.UUIDField(read_only=True)
    position = serializers.IntegerField(required=False, min_value=1, max_value=MAX_STEPS)
    template = serializers.CharField(
        source="template_key", required=False, allow_blank=True, max_length=100
    )
    content = ContentSerializer(required=False)
    delay = DelayField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=int(MAX_DELAY.total_seconds()),
        help_text="Seconds after the previous step reached the recipient.",
    )
    send_at = serializers.DateTimeField(required=False, allow_null=True)
    condition = ConditionField(required=False)


class RunSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    slot = serializers.DateTimeField()
    status = serializers.CharField()
    total = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    by_status = serializers.DictField(
        child=serializers.IntegerField(), help_text="Deliveries by status, every status present."
    )
    percent = serializers.FloatField()
    per_second = serializers.FloatField()
    eta_seconds = serializers.FloatField(allow_null=True)


class CampaignInSerializer(serializers.Serializer):
    """A campaign as written: POST (a draft) and PATCH (a draft's fields; the name only once it
    is scheduled)."""

    name = serializers.CharField(max_length=200)
    category = serializers.SlugField(max_length=64)
    channels = ChannelsField(required=False)
    segment = serializers.UUIDField(required=False, allow_null=True)
    static_list = serializers.UUIDField(required=False, allow_null=True)
    data = serializers.DictField(required=False)  # type: ignore[assignment]  # DRF takes it off
    steps = StepSerializer(  # type: ignore[call-arg]  # ListSerializer takes max_length
        many=True, required=False, max_length=MAX_STEPS
    )
    send_at = serializers.DateTimeField(required=False, allow_null=True)
    local_time = serializers.TimeField(required=False, allow_null=True, format="%H:%M")
    cron = serializers.CharField(required=False, allow_blank=True, max_length=100)
    timezone = serializers.CharField(required=False, allow_blank=True, max_length=64)
    window_start = serializers.TimeField(required=False, allow_null=True, format="%H:%M")
    window_end = serializers.TimeField(required=False, allow_null=True, format="%H:%M")


class CampaignSerializer(serializers.Serializer):
    """A campaign as read: its steps, its latest runs and (on a single campaign) its progress."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    status = serializers.CharField()
    category = serializers.CharField(source="category_id")
    channels = serializers.ListField(child=serializers.CharField())
    segment = serializers.UUIDField(source="segment_id", allow_null=True)
    static_list = serializers.UUIDField(source="static_list_id", allow_null=True)
    data = serializers.DictField()  # type: ignore[assignment]  # DRF takes it off the class
    send_at = serializers.DateTimeField(allow_null=True)
    local_time = serializers.TimeField(allow_null=True, format="%H:%M")
    cron = serializers.CharField()
    timezone = serializers.CharField()
    window_start = serializers.TimeField(allow_null=True, format="%H:%M")
    window_end = serializers.TimeField(allow_null=True, format="%H:%M")
    audience_count = serializers.IntegerField(allow_null=True)
    pause_reason = serializers.CharField()
    created_by = serializers.CharField()
    approved_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    scheduled_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    cancelled_at = serializers.DateTimeField(allow_null=True)
    steps = StepSerializer(many=True, source="steps.all")
    runs = serializers.SerializerMethodField(
        help_text=f"The latest {RUNS_SHOWN} runs, newest first."
    )
    progress = serializers.SerializerMethodField()

    @extend_schema_field(RunSerializer(many=True))
    def get_runs(self, obj) -> Any:
        runs = getattr(obj, "latest_runs", None)
        if runs is None:
            runs = obj.runs.order_by("-slot")[:RUNS_SHOWN]
        return RunSerializer(runs, many=True).data

    @extend_schema_field(ProgressSerializer(allow_null=True))
    def get_progress(self, obj) -> dict[str, Any] | None:
        progress = self.context.get("progress")
        return ProgressSerializer(progress).data if progress is not None else None


class ScheduleInSerializer(serializers.Serializer):
    at = serializers.DateTimeField(required=False, allow_null=True)
    local_time = serializers.TimeField(required=False, allow_null=True)
    cron = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=100)
    timezone = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=64
    )


class TestSendToSerializer(serializers.Serializer):
    user_id = serializers.CharField(required=False, max_length=255)
    email = serializers.EmailField(required=False, max_length=320)
    phone = serializers.CharField(required=False, max_length=32)

    def validate(self, attrs):
        if len([k for k in ("user_id", "email", "phone") if attrs.get(k)]) != 1:
            raise serializers.ValidationError("Give exactly one of user_id, email, phone.")
        return attrs


class TestSendSerializer(serializers.Serializer):
    to = TestSendToSerializer()


class RecipientSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    run = serializers.UUIDField(source="run_id")
    step = serializers.UUIDField(source="step_id")
    step_position = serializers.IntegerField(source="step.position")
    key = serializers.CharField()
    user_id = serializers.CharField(source="user.external_id", allow_null=True, default=None)
    email = serializers.CharField()
    phone = serializers.CharField()
    data = serializers.DictField()  # type: ignore[assignment]  # DRF takes it off the class
    state = serializers.CharField()
    reason = serializers.CharField()
    due_at = serializers.DateTimeField(allow_null=True)
    notification_id = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
