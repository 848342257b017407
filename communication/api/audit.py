"""``GET /api/v1/compliance/audit``: the audit trail for services with ``compliance:read``,
filtered by exact values and a time range, newest first, by cursor."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import ValidationError

from communication import audit
from communication.api import query
from communication.auth.permissions import HasScope
from communication.models import AuditEntry

# The text filters, matched exactly, and the longest value each column holds.
TEXT_FILTERS = {"actor": 300, "object_type": 64, "object_id": 255, "action": 64}
FILTER_HELP = {
    "actor": "user:<user id>, service:<client id>, staff:<username> or system.",
    "object_type": "<app>.<model> or a noun, e.g. templates_app.template.",
    "object_id": "The object's id (with object_type).",
    "action": "<noun>.<verb>, e.g. template.approve.",
}


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = (
            "id",
            "at",
            "actor",
            "action",
            "object_type",
            "object_id",
            "changes",
            "ip",
            "request_id",
        )


class NewestFirst(query.StrictCursorPagination):
    page_size = 50
    max_page_size = 500
    ordering = ("-id",)
    page_size_query_param = "limit"


class AuditViewSet(viewsets.GenericViewSet):
    """The audit trail, read-only."""

    permission_classes = [HasScope("compliance:read")]
    pagination_class = NewestFirst
    serializer_class = AuditEntrySerializer

    @extend_schema(
        responses=AuditEntrySerializer(many=True),
        parameters=[
            *(OpenApiParameter(name, str, description=text) for name, text in FILTER_HELP.items()),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="At or after."),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="Before."),
        ],
        operation_id="compliance_audit_list",
    )
    def list(self, request):
        params = request.query_params
        text = {}
        for name, longest in TEXT_FILTERS.items():
            value = params.get(name)
            if value is not None and len(value) > longest:
                raise ValidationError({name: [f"At most {longest} characters."]})
            text[name] = value
        since, until = query.moment(params, "since"), query.moment(params, "until")
        if since and until and since >= until:
            raise ValidationError({"until": ["Must be after since."]})
        page = self.paginate_queryset(audit.audit_entries(**text, since=since, until=until))
        return self.get_paginated_response(AuditEntrySerializer(page, many=True).data)
