"""``/api/v1/segments``: saved audiences, their preview. Scope ``campaigns:manage`` (or a staff
user's token). Views check input and call ``services`` / ``selectors``; nothing else."""

from __future__ import annotations

import re

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from campaigns import selectors, services
from campaigns.api import serializers as s
from campaigns.models import Segment
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
