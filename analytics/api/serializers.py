"""The analytics answers: what ``analytics.selectors`` returns, rendered (ISO 8601 buckets in UTC,
costs as decimal strings) and described in the OpenAPI schema."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from rest_framework import serializers


def _count(help_text: str = "") -> serializers.IntegerField:
    return serializers.IntegerField(help_text=help_text)


def _rate(help_text: str) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, help_text=help_text)


def _cost(help_text: str = "In COST_CURRENCY.") -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=24, decimal_places=6, coerce_to_string=True, help_text=help_text
    )


_DUPLICATE = (
    "Sends (counted in sent) repeated after a worker died during the provider call: the "
    "recipient may have the message twice."
)


class AnalyticsGroupSerializer(serializers.Serializer):
    """The dimensions of ``group_by``, and only those; null where the rollup has none (an in-app
    message has no provider)."""

    channel = serializers.CharField(required=False, allow_null=True)
    provider = serializers.CharField(required=False, allow_null=True)
    category = serializers.CharField(required=False, allow_null=True)
    template = serializers.CharField(required=False, allow_null=True)
    campaign = serializers.UUIDField(required=False, allow_null=True)
    step = serializers.UUIDField(required=False, allow_null=True)
    variant = serializers.CharField(required=False, allow_null=True)

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        # The keys present, and no others (DRF would give every nullable field a null).
        return {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in instance.items()}


class AnalyticsDeliveryRatesSerializer(serializers.Serializer):
    delivered = _rate("delivered / sent")
    failed = _rate("failed / (sent + failed)")
    bounced = _rate("bounced / sent")
    complained = _rate("complained / sent")
    opened = _rate("unique opens / sent")
    clicked = _rate("unique clicks / sent")
    unsubscribed = _rate("unsubscribed / sent")
    possibly_duplicate = _rate("possibly_duplicate / sent")


class AnalyticsDeliveryCountsSerializer(serializers.Serializer):
    sent = _count("Accepted by a provider.")
    delivered = _count()
    failed = _count()
    bounced = _count()
    complained = _count()
    opened = _count("Unique human opens (a delivery's first).")
    opened_total = _count("Every human open.")
    clicked = _count("Unique human clicks (a delivery's first).")
    clicked_total = _count("Every human click.")
    unsubscribed = _count()
    possibly_duplicate = _count(_DUPLICATE)
    cost = _cost()
    rates = AnalyticsDeliveryRatesSerializer()

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        # A series may hold thousands of points: the declared fields (which the schema shows)
        # rendered directly, as DRF's fields would, at a tenth of their cost.
        out = {name: instance[name] for name in _DELIVERY_COUNTS}
        out["cost"] = f"{instance['cost']:.6f}"
        out["rates"] = dict(instance["rates"])
        return out


class AnalyticsDeliveryPointSerializer(AnalyticsDeliveryCountsSerializer):
    bucket = serializers.DateTimeField(help_text="The bucket's start, UTC.")
    group = AnalyticsGroupSerializer()

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        group = AnalyticsGroupSerializer().to_representation(instance["group"])
        bucket = instance["bucket"].astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return {"bucket": bucket, "group": group} | super().to_representation(instance)


_DELIVERY_COUNTS = [
    name
    for name, field in AnalyticsDeliveryCountsSerializer().get_fields().items()
    if isinstance(field, serializers.IntegerField)
]


class AnalyticsDeliverySerializer(serializers.Serializer):
    granularity = serializers.CharField(help_text="hour or day.")
    currency = serializers.CharField()
    series = AnalyticsDeliveryPointSerializer(
        many=True, help_text="Per bucket and group, in bucket order; empty buckets are absent."
    )
    totals = AnalyticsDeliveryCountsSerializer()


class AnalyticsEngagementRatesSerializer(serializers.Serializer):
    open = _rate("unique opens / sent")
    open_total = _rate("every open / sent")
    click = _rate("unique clicks / sent")
    click_total = _rate("every click / sent")
    click_to_open = _rate("unique clicks / unique opens")
    unsubscribe = _rate("unsubscribed / sent")


class AnalyticsEngagementCountsSerializer(serializers.Serializer):
    sent = _count()
    delivered = _count()
    opened = _count("Unique human opens.")
    opened_total = _count("Every human open.")
    machine_opened = _count("Opens by machines (privacy proxies, scanners), not counted above.")
    clicked = _count("Unique human clicks.")
    clicked_total = _count("Every human click.")
    unsubscribed = _count()
    rates = AnalyticsEngagementRatesSerializer()


class AnalyticsEngagementGroupSerializer(AnalyticsEngagementCountsSerializer):
    group = AnalyticsGroupSerializer()


class AnalyticsVariantSerializer(serializers.Serializer):
    key = serializers.CharField()
    sent = _count()
    opened = _count("Unique opens.")
    clicked = _count("Unique clicks.")
    rate = serializers.FloatField(help_text="The compared metric over sent.")
    ci = serializers.ListField(
        child=serializers.FloatField(), help_text="Wilson score interval at 1 - alpha."
    )


class AnalyticsABSerializer(serializers.Serializer):
    test = serializers.CharField(
        help_text="two_proportion_z (two variants) or chi_squared (more than two)."
    )
    metric = serializers.CharField(help_text="open or click: what rate is compared.")
    alpha = serializers.FloatField()
    p_value = serializers.FloatField()
    significant = serializers.BooleanField(help_text="p_value < alpha.")
    diff = serializers.FloatField(help_text="Rate of diff_between[0] minus rate of [1].")
    diff_between = serializers.ListField(
        child=serializers.CharField(), help_text="The highest-rate and the lowest-rate variants."
    )
    diff_ci = serializers.ListField(
        child=serializers.FloatField(),
        help_text="Confidence interval (1 - alpha) of diff, unpooled standard error.",
    )
    needed_per_variant = serializers.IntegerField(
        allow_null=True,
        help_text="Sample per variant for 80 % power at the observed rates (two-sided); null "
        "when already significant, or when the rates are equal (no sample detects no "
        "difference).",
    )
    variants = AnalyticsVariantSerializer(many=True)


class AnalyticsEngagementSerializer(serializers.Serializer):
    groups = AnalyticsEngagementGroupSerializer(many=True)
    totals = AnalyticsEngagementCountsSerializer()
    ab = AnalyticsABSerializer(allow_null=True, help_text="Null with fewer than two variants.")


class AnalyticsPercentilesSerializer(serializers.Serializer):
    count = _count("Observations in the histogram.")
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class AnalyticsLatencySerializer(AnalyticsPercentilesSerializer):
    mean = serializers.FloatField(allow_null=True)


class AnalyticsThroughputSerializer(serializers.Serializer):
    per_second = serializers.FloatField(help_text="Sent over the range's length.")
    per_minute = serializers.FloatField()


class AnalyticsPerformanceGroupSerializer(serializers.Serializer):
    group = AnalyticsGroupSerializer()
    sent = _count()
    failed = _count()
    provider_calls = _count()
    provider_errors = _count()
    possibly_duplicate = _count(_DUPLICATE)
    error_rate = _rate("provider_errors / provider_calls")
    throughput = AnalyticsThroughputSerializer()
    latency_ms = AnalyticsLatencySerializer(help_text="The provider call.")
    queue_wait_ms = AnalyticsPercentilesSerializer(help_text="From queued to the provider call.")
    api_to_provider_ms = AnalyticsPercentilesSerializer(
        help_text="From the API request to the provider's answer."
    )


class AnalyticsPerformanceSerializer(serializers.Serializer):
    seconds = serializers.FloatField(help_text="The range's length.")
    groups = AnalyticsPerformanceGroupSerializer(many=True)


class AnalyticsCostLineSerializer(serializers.Serializer):
    sent = _count()
    cost = _cost()
    cost_per_message = serializers.DecimalField(
        max_digits=24, decimal_places=6, coerce_to_string=True, allow_null=True
    )


class AnalyticsProviderCostSerializer(AnalyticsCostLineSerializer):
    channel = serializers.CharField(allow_null=True)
    provider = serializers.CharField(allow_null=True)


class AnalyticsChannelCostSerializer(AnalyticsCostLineSerializer):
    channel = serializers.CharField(allow_null=True)


class AnalyticsCampaignCostSerializer(AnalyticsCostLineSerializer):
    campaign = serializers.UUIDField(allow_null=True, help_text="Null: outside any campaign.")


class AnalyticsCostSerializer(serializers.Serializer):
    currency = serializers.CharField()
    total = AnalyticsCostLineSerializer()
    by_provider = AnalyticsProviderCostSerializer(many=True)
    by_channel = AnalyticsChannelCostSerializer(many=True)
    by_campaign = AnalyticsCampaignCostSerializer(many=True)
