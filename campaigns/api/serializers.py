from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from campaigns import segments
from campaigns.models import Segment

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
