"""``/api/v1/analytics/…``: delivery, engagement, performance and cost over the rollups.

Views read and check the query string, call ``analytics.selectors`` and render; nothing else.
Staff users (a user token) and services with the scope ``analytics:read`` may read them.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics import selectors
from analytics.api import serializers as s
from analytics.models import Granularity
from communication.api import query
from communication.auth.permissions import ScopeOrStaff

SCOPE = "analytics:read"
# Without ``from``, the range is this long and ends with the current bucket.
DEFAULT_SPAN = {Granularity.HOUR: dt.timedelta(days=7), Granularity.DAY: dt.timedelta(days=30)}
# Bounds that keep the day arithmetic away from datetime's limits.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
STRING_FILTERS = ("channel", "provider", "category", "template", "variant")
UUID_FILTERS = ("campaign", "step")


def _invalid(name: str, message: str) -> ValidationError:
    return ValidationError({name: [message]})


def _range(params: Mapping[str, str], granularity: str) -> tuple[dt.datetime, dt.datetime]:
    end = query.moment(params, "to")
    start = query.moment(params, "from")
    if end is None:
        now = timezone.now().astimezone(dt.UTC)
        floor = now.replace(minute=0, second=0, microsecond=0)
        if granularity == Granularity.DAY:
            floor = floor.replace(hour=0)
        end = floor + selectors.STEP[Granularity(granularity)]
    for name, moment in (("from", start), ("to", end)):
        if moment is not None and not EARLIEST <= moment <= LATEST:
            raise _invalid(name, "Must be between 1970 and 9000.")
    if start is None:
        start = end - DEFAULT_SPAN[Granularity(granularity)]
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _group_by(params: Mapping[str, str], default: tuple[str, ...] | None) -> tuple[str, ...] | None:
    value = params.get("group_by")
    if value is None:
        return default
    return selectors.parse_group_by(n.strip() for n in value.split(",") if n.strip())


def _filters(params: Mapping[str, str]) -> selectors.Filters:
    values: dict[str, Any] = {name: params.get(name) or None for name in STRING_FILTERS}
    for name in UUID_FILTERS:
        raw = params.get(name)
        if raw:
            try:
                values[name] = uuid.UUID(raw)
            except ValueError as exc:
                raise _invalid(name, "Must be a UUID.") from exc
    return selectors.Filters(**values)


def _alpha(params: Mapping[str, str]) -> float:
    raw = params.get("alpha")
    if not raw:
        return 0.05
    try:
        alpha = float(raw)
    except ValueError:
        alpha = math.nan
    if not (math.isfinite(alpha) and 0 < alpha <= 0.5):
        raise _invalid("alpha", "Must be a number above 0 and at most 0.5.")
    return alpha


RANGE_PARAMETERS = [
    OpenApiParameter(
        "from",
        OpenApiTypes.DATETIME,
        description="Inclusive, ISO 8601 (naive: UTC), on a bucket edge. Default: `to` minus "
        "7 days (30 with granularity=day).",
    ),
    OpenApiParameter(
        "to",
        OpenApiTypes.DATETIME,
        description="Exclusive, ISO 8601, on a bucket edge. Default: the end of the current "
        "hour (day with granularity=day).",
    ),
]
FILTER_PARAMETERS = [
    *(OpenApiParameter(name, str, description=f"Only this {name}.") for name in STRING_FILTERS),
    *(
        OpenApiParameter(name, OpenApiTypes.UUID, description=f"Only this {name}.")
        for name in UUID_FILTERS
    ),
]


def _group_by_parameter(default: str) -> OpenApiParameter:
    return OpenApiParameter(
        "group_by",
        str,
        description="Comma-separated dimensions among: "
        f"{', '.join(selectors.DIMENSIONS)}. Default: {default}.",
    )


class _AnalyticsView(APIView):
    permission_classes = [ScopeOrStaff(SCOPE)]


class DeliveryView(_AnalyticsView):
    @extend_schema(
        operation_id="analytics_delivery",
        summary="Delivery counts and rates per bucket and group",
        parameters=[
            *RANGE_PARAMETERS,
            OpenApiParameter(
                "granularity",
                str,
                enum=Granularity.values,
                description="Bucket size (UTC). Default: hour. With day, from and to are "
                "midnights.",
            ),
            _group_by_parameter("none (one series)"),
            *FILTER_PARAMETERS,
        ],
        responses=s.AnalyticsDeliverySerializer,
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        granularity = query.choice(params, "granularity", Granularity.values) or Granularity.HOUR
        start, end = _range(params, granularity)
        report = selectors.delivery_report(
            start=start,
            end=end,
            granularity=granularity,
            group_by=_group_by(params, ()) or (),
            filters=_filters(params),
        )
        return Response(s.AnalyticsDeliverySerializer(report).data)


class EngagementView(_AnalyticsView):
    @extend_schema(
        operation_id="analytics_engagement",
        summary="Open, click and unsubscribe rates, and the A/B result of the variants",
        parameters=[
            *RANGE_PARAMETERS,
            _group_by_parameter(
                "variant with template=, step,variant with campaign=, template otherwise"
            ),
            *FILTER_PARAMETERS,
            OpenApiParameter(
                "metric",
                str,
                enum=list(selectors.METRICS),
                description="What the A/B test compares: unique opens (default) or unique "
                "clicks, over sent.",
            ),
            OpenApiParameter(
                "alpha",
                float,
                description="Significance level of the A/B test and of its intervals "
                "(default 0.05).",
            ),
        ],
        responses=s.AnalyticsEngagementSerializer,
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        start, end = _range(params, Granularity.HOUR)
        report = selectors.engagement_report(
            start=start,
            end=end,
            group_by=_group_by(params, None),
            filters=_filters(params),
            metric=query.choice(params, "metric", selectors.METRICS) or "open",
            alpha=_alpha(params),
        )
        return Response(s.AnalyticsEngagementSerializer(report).data)


class PerformanceView(_AnalyticsView):
    @extend_schema(
        operation_id="analytics_performance",
        summary="Provider latency, queue wait, error rate and throughput",
        parameters=[*RANGE_PARAMETERS, _group_by_parameter("provider"), *FILTER_PARAMETERS],
        responses=s.AnalyticsPerformanceSerializer,
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        start, end = _range(params, Granularity.HOUR)
        report = selectors.performance_report(
            start=start,
            end=end,
            group_by=_group_by(params, ("provider",)) or (),
            filters=_filters(params),
        )
        return Response(s.AnalyticsPerformanceSerializer(report).data)


class CostView(_AnalyticsView):
    @extend_schema(
        operation_id="analytics_cost",
        summary="Cost per provider, channel and campaign",
        parameters=[*RANGE_PARAMETERS, *FILTER_PARAMETERS],
        responses=s.AnalyticsCostSerializer,
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        start, end = _range(params, Granularity.HOUR)
        report = selectors.cost_report(start=start, end=end, filters=_filters(params))
        return Response(s.AnalyticsCostSerializer(report).data)
