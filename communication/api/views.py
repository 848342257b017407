from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.response import Response

from communication import identity, services
from communication.api.serializers import MeSerializer
from communication.auth.permissions import HasScope, IsUser
from communication.exceptions import NotFoundError, ServiceUnavailableError


class MeViewSet(viewsets.ViewSet):
    """The profile of the user the token belongs to."""

    permission_classes = [IsUser]
    single_object = True  # the schema describes one object (communication.api.openapi)

    @extend_schema(responses=MeSerializer, operation_id="me_retrieve")
    def list(self, request):
        return Response(MeSerializer(request.user).data)


class UserViewSet(viewsets.ViewSet):
    """A user's profile, for services (scope ``users:read``).

    A user not known locally is looked up through the identity service; an unknown one is 404.
    """

    permission_classes = [HasScope("users:read")]
    lookup_field = "user_id"
    lookup_value_regex = "[^/]+"

    @extend_schema(responses=MeSerializer, operation_id="users_retrieve")
    def retrieve(self, request, user_id: str):
        try:
            user = services.user_resolve(user_id)
        except identity.UnknownUserError as exc:
            raise NotFoundError(f"No user {user_id!r}.", code="unknown_user") from exc
        except identity.IdentityUnavailableError as exc:
            raise ServiceUnavailableError(
                "The identity service is unavailable and this user is not known locally."
            ) from exc
        return Response(MeSerializer(user).data)
