"""``POST /api/v1/compliance/erasure`` and ``GET /api/v1/compliance/erasure/{id}``: the right to
erasure, for services holding ``compliance:manage``. The work is
``communication.compliance.erasure``'s."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from communication.api.routers import UUID
from communication.auth.permissions import HasScope
from communication.compliance import erasure
from communication.exceptions import APIError, NotFoundError, ServiceUnavailableError
from communication.models import ErasureRequest

ErasureBody = inline_serializer(
    "ErasureResult",
    {
        "subject": serializers.CharField(allow_null=True),
        "erased": serializers.DictField(child=serializers.IntegerField()),
        "already_erased": serializers.BooleanField(),
    },
)
ErasureIn = inline_serializer(
    "ErasureRequestBody",
    {
        "user_id": serializers.CharField(required=False),
        "email": serializers.EmailField(required=False),
        "phone": serializers.CharField(required=False),
    },
)


def result_body(request: ErasureRequest, subject: str | None) -> dict[str, Any]:
    """What a finished erasure answers: ``subject`` is the identifier as normalised, known only
    to the request that gave it (the record keeps its hash alone), else null."""
    if request.status != ErasureRequest.Status.DONE:
        return {"status": request.status}
    return {"subject": subject, "erased": request.erased, "already_erased": request.already_erased}


def _identifier(data: Any) -> tuple[str, Any]:
    if not isinstance(data, dict):
        raise APIError("The body must be a JSON object.", "invalid_subject")
    unknown = sorted(set(data) - set(erasure.KINDS))
    if unknown:
        raise APIError(
            "Unknown field(s).",
            "invalid_subject",
            fields={name[:64]: ["Unknown field."] for name in unknown[:10]},
        )
    given = [(kind, data[kind]) for kind in erasure.KINDS if kind in data]
    if len(given) != 1:
        raise APIError("Name exactly one of user_id, email or phone.", "invalid_subject")
    return given[0]


class ErasureViewSet(viewsets.ViewSet):
    permission_classes = [HasScope("compliance:manage")]
    lookup_url_kwarg = "erasure_id"
    lookup_value_regex = UUID

    @extend_schema(
        request=ErasureIn,
        responses={
            200: ErasureBody,
            202: OpenApiResponse(
                inline_serializer("ErasureAccepted", {"status_url": serializers.URLField()})
            ),
        },
        operation_id="compliance_erasure_create",
    )
    def create(self, request):
        kind, value = _identifier(request.data)
        try:
            done, normalised = erasure.erasure_start(
                kind, value, requested_by=f"service:{request.user.client_id}"
            )
        except erasure.SubjectError as exc:
            raise APIError(str(exc), exc.code, fields={kind: [str(exc)]}) from exc
        except erasure.ErasureError as exc:
            # Marked failed; what it erased stays erased, and the same call again finishes it.
            raise ServiceUnavailableError(
                "The erasure could not finish (a row was busy); send the same request again.",
                "erasure_failed",
            ) from exc
        if done.status == ErasureRequest.Status.DONE:
            return Response(result_body(done, normalised))
        url = request.build_absolute_uri(f"/api/v1/compliance/erasure/{done.pk}")
        return Response({"status_url": url}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: ErasureBody}, operation_id="compliance_erasure_get")
    def retrieve(self, request, erasure_id):
        found = ErasureRequest.objects.filter(pk=erasure_id).first()
        if found is None:
            raise NotFoundError("No such erasure.")
        return Response(result_body(found, None))
