"""``/api/v1/compliance/…``: a person's export and the compliance report, for services with the
scope ``compliance:read``. Views check the input and call ``communication.compliance``."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from communication.auth.permissions import HasScope
from communication.compliance import export, report
from communication.exceptions import NotFoundError

SCOPE = "compliance:read"


class ComplianceExportView(APIView):
    """Everything held about a person (access and portability), as one streamed JSON
    document: ``user_id`` and ``generated_at``, then one key per app, one list per kind of data;
    attachments as signed download links."""

    permission_classes = [HasScope(SCOPE)]

    @extend_schema(
        operation_id="compliance_export",
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="The person's data by app."),
            404: OpenApiResponse(description="No such user (code unknown_user)."),
        },
    )
    def get(self, request: Request, user_id: str) -> StreamingHttpResponse:
        try:
            user = export.export_user(user_id)
        except export.UnknownSubjectError:
            raise NotFoundError("No data is held about this user.", code="unknown_user") from None
        response = StreamingHttpResponse(export.export_open(user), content_type="application/json")
        response["Cache-Control"] = "no-store"
        response["Content-Disposition"] = 'attachment; filename="export.json"'
        return response


class ComplianceReportView(APIView):
    """Retention status per kind of data, erasures and exports done, the audit chain."""

    permission_classes = [HasScope(SCOPE)]

    @extend_schema(operation_id="compliance_report", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(report.compliance_report())
