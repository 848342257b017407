"""``/api/v1/segments`` (saved audiences, their preview) and ``/api/v1/campaigns``. Scope ``campaigns:manage`` (or a staff
user's token). Views check input and call ``services`` / ``selectors``; nothing else."""

from __future__ import annotations

import re

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from campaigns import selectors, services
from campaigns.api import serializers as s
from campaigns.models import Campaign, CampaignRecipient, Segment
from campaigns.progress import campaign_progress
from communication.api import query
from communication.api.routers import UUID
from communication.auth.permissions import ScopeOrStaff
from communication.exceptions import APIError
from notifications.categories import category_get

MANAGE = ("campaigns:manage",)
_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}")


class Pagination(query.StrictLimitOffsetPagination):
    default_limit = 50
    max_limit = 200


class SegmentViewSet(viewsets.GenericViewSet):
    """Segments: list, create, read, change, delete, and preview who is in one."""

    permission_classes = [ScopeOrStaff(*MANAGE)]
    pagination_class = Pagination
    serializer_class = s.SegmentSerializer
    lookup_url_kwarg = "segment_id"
    lookup_value_regex = UUID

    def get_queryset(self):
        return selectors.segment_list()

    def get_object(self) -> Segment:
        try:
            return selectors.segment_get(segment_id=self.kwargs["segment_id"])
        except Segment.DoesNotExist:
            raise Http404 from None

    @extend_schema(operation_id="segments_list")
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(operation_id="segments_create", responses={201: s.SegmentSerializer})
    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        segment = services.segment_create(actor=request.user, **serializer.validated_data)
        return Response(self.get_serializer(segment).data, status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="segments_get")
    def retrieve(self, request, segment_id=None):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(operation_id="segments_update")
    def partial_update(self, request, segment_id=None):
        segment = self.get_object()
        serializer = self.get_serializer(segment, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        segment = services.segment_update(segment=segment, **serializer.validated_data)
        return Response(self.get_serializer(segment).data)

    @extend_schema(operation_id="segments_delete", request=None, responses={204: None})
    def destroy(self, request, segment_id=None):
        services.segment_delete(segment=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="segments_preview",
        request=None,
        responses=s.SegmentPreviewSerializer,
        parameters=[
            OpenApiParameter(
                "category",
                str,
                description="The category consent and preference rules are about (a key).",
            )
        ],
    )
    @action(detail=True, methods=["get"])
    def preview(self, request, segment_id=None):
        segment = self.get_object()
        category = request.query_params.get("category") or None
        # A key is a slug: anything else (NUL included, which PostgreSQL refuses) is unknown.
        if category is not None and (
            not _SLUG.fullmatch(category) or category_get(category) is None
        ):
            raise APIError(
                f"No category {category[:64]!r}.",
                code="unknown_category",
                fields={"category": ["Unknown category."]},
            )
        preview = selectors.segment_preview(rules=segment.rules, category=category)
        return Response(s.SegmentPreviewSerializer(preview).data)


class CampaignViewSet(viewsets.GenericViewSet):
    """Campaigns: create a draft with its steps, read (with progress), edit, and move it through
    its life cycle (schedule, approve, pause, resume, cancel); send a test; list its recipients."""

    permission_classes = [ScopeOrStaff(*MANAGE)]
    pagination_class = Pagination
    serializer_class = s.CampaignSerializer
    lookup_url_kwarg = "campaign_id"
    lookup_value_regex = UUID

    def get_queryset(self):
        return selectors.campaign_list()

    def get_object(self) -> Campaign:
        try:
            return selectors.campaign_get(campaign_id=self.kwargs["campaign_id"])
        except Campaign.DoesNotExist:
            raise Http404 from None

    def _detail(
        self, campaign: Campaign, status_code: int = status.HTTP_200_OK, *, fresh: bool = False
    ) -> Response:
        if not fresh:  # a verb changed it: its steps and runs are read again
            campaign = selectors.campaign_get(campaign_id=campaign.pk)
        context = {"progress": campaign_progress(campaign)}
        return Response(s.CampaignSerializer(campaign, context=context).data, status=status_code)

    @extend_schema(operation_id="campaigns_list", responses=s.CampaignSerializer(many=True))
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.CampaignSerializer(page, many=True).data)

    @extend_schema(
        operation_id="campaigns_create",
        request=s.CampaignInSerializer,
        responses={201: s.CampaignSerializer},
    )
    def create(self, request):
        serializer = s.CampaignInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = services.campaign_create(actor=request.user, **serializer.validated_data)
        return self._detail(campaign, status.HTTP_201_CREATED)

    @extend_schema(operation_id="campaigns_get")
    def retrieve(self, request, campaign_id=None):
        return self._detail(self.get_object(), fresh=True)

    @extend_schema(operation_id="campaigns_update", request=s.CampaignInSerializer)
    def partial_update(self, request, campaign_id=None):
        campaign = self.get_object()
        serializer = s.CampaignInSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        campaign = services.campaign_update(
            campaign=campaign, actor=request.user, **serializer.validated_data
        )
        return self._detail(campaign)

    @extend_schema(
        operation_id="campaigns_schedule",
        request=s.ScheduleInSerializer,
        responses=s.CampaignSerializer,
    )
    @action(detail=True, methods=["post"])
    def schedule(self, request, campaign_id=None):
        campaign = self.get_object()
        serializer = s.ScheduleInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = services.campaign_schedule(
            campaign=campaign, actor=request.user, **serializer.validated_data
        )
        return self._detail(campaign)

    def _verb(self, verb) -> Response:
        return self._detail(verb(campaign=self.get_object(), actor=self.request.user))

    @extend_schema(operation_id="campaigns_approve", request=None, responses=s.CampaignSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, campaign_id=None):
        return self._verb(services.campaign_approve)

    @extend_schema(operation_id="campaigns_pause", request=None, responses=s.CampaignSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, campaign_id=None):
        return self._verb(services.campaign_pause)

    @extend_schema(operation_id="campaigns_resume", request=None, responses=s.CampaignSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, campaign_id=None):
        return self._verb(services.campaign_resume)

    @extend_schema(operation_id="campaigns_cancel", request=None, responses=s.CampaignSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, campaign_id=None):
        return self._verb(services.campaign_cancel)

    @extend_schema(
        operation_id="campaigns_test_send",
        request=s.TestSendSerializer,
        responses={202: OpenApiTypes.OBJECT},
    )
    @action(detail=True, methods=["post"], url_path="test-send")
    def test_send(self, request, campaign_id=None):
        campaign = self.get_object()
        serializer = s.TestSendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        to = {k: v for k, v in serializer.validated_data["to"].items() if v}
        body = services.campaign_test_send(campaign=campaign, actor=request.user, to=to)
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="campaigns_recipients",
        request=None,
        responses=s.RecipientSerializer(many=True),
        parameters=[
            OpenApiParameter("state", str, enum=CampaignRecipient.State.values, required=False)
        ],
    )
    @action(detail=True, methods=["get"])
    def recipients(self, request, campaign_id=None):
        campaign = self.get_object()
        state = query.choice(request.query_params, "state", CampaignRecipient.State.values)
        rows = selectors.campaign_recipients(campaign=campaign, state=state)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(s.RecipientSerializer(page, many=True).data)
