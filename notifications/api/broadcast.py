"""``POST /api/v1/organizations/{id}/broadcast``: a user's send to a whole organization
(``notifications.services.broadcast`` decides who may)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action

from communication.auth.permissions import IsUser
from notifications import services
from notifications.api import serializers as s
from notifications.api.views import IDEMPOTENCY_HEADER, OVERLOADED, _outcome_response


class BroadcastViewSet(viewsets.ViewSet):
    """A send to every member of an organization, by a user holding one of its
    ``broadcast_roles`` (services use ``POST /notifications`` with ``notifications:broadcast``)."""

    permission_classes = [IsUser]
    lookup_field = "organization_id"
    lookup_value_regex = "[^/]+"
    rate_limit_group = "send"

    @extend_schema(
        request=s.BroadcastSerializer,
        responses={202: s.RequestOutSerializer, 503: OVERLOADED},
        description="The answer of ``POST /notifications``: one notification per member, each "
        "with the member's preferences applied. 403 ``communication_not_allowed`` when none of "
        "your roles is in the organization's ``broadcast_roles`` (nothing stored); 404 "
        "``unknown_organization`` for an organization that is not yours or under yours.",
        parameters=[IDEMPOTENCY_HEADER],
        operation_id="organizations_broadcast",
    )
    @action(detail=True, methods=["post"])
    def broadcast(self, request, organization_id: str):
        outcome = services.organization_broadcast(
            user=request.user,
            organization_id=organization_id,
            body=request.data,
            idempotency_key=request.headers.get("Idempotency-Key", "")[:255],
        )
        return _outcome_response(outcome)
