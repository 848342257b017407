"""``GET /api/v1/organizations/{id}``: an organization and the policy in force for its members.

Members of the organization or of one of its ancestors see it, and services with ``users:read``;
everyone else gets the 404 an unknown id gets, so an answer never tells that it exists.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from communication import identity, organizations
from communication.auth.tokens import ServicePrincipal
from communication.exceptions import NotFoundError, ScopeMissingError, ServiceUnavailableError
from communication.org_models import DIRECT_SCOPES, Organization


class PolicySerializer(serializers.Serializer):
    direct_scope = serializers.ChoiceField(choices=DIRECT_SCOPES)
    group_create_roles = serializers.ListField(child=serializers.CharField())
    broadcast_roles = serializers.ListField(child=serializers.CharField())


class OrganizationSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    parent_id = serializers.CharField(allow_null=True)
    policy = PolicySerializer(help_text="The policy in force: its own values, else inherited.")

    @staticmethod
    def of(org: Organization) -> dict:
        return {
            "id": org.id,
            "name": org.name,
            "parent_id": org.parent_id,
            "policy": organizations.organization_policy(org.id).as_dict(),
        }


class OrganizationViewSet(viewsets.ViewSet):
    """An organization: for its members and those of its ancestors, and services with
    ``users:read`` (an organization not known locally is looked up through the identity
    service for them)."""

    permission_classes = [IsAuthenticated]
    lookup_field = "organization_id"
    lookup_value_regex = "[^/]+"

    @extend_schema(responses=OrganizationSerializer, operation_id="organizations_retrieve")
    def retrieve(self, request, organization_id: str):
        missing = NotFoundError("No such organization.", code="unknown_organization")
        principal = request.user
        if isinstance(principal, ServicePrincipal):
            if "users:read" not in principal.scopes:
                raise ScopeMissingError("This endpoint needs the scope users:read.")
            try:
                org = organizations.organization_resolve(organization_id)
            except identity.IdentityUnavailableError as exc:
                raise ServiceUnavailableError(
                    "The identity service is unavailable and this organization is not known "
                    "locally."
                ) from exc
        else:
            org = organizations.organization_get_for(principal.organization, organization_id)
        if org is None:
            raise missing
        return Response(OrganizationSerializer.of(org))
