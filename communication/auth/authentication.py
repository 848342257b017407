"""DRF authentication: ``Authorization: Bearer <jwt>`` for users and services."""

from __future__ import annotations

from rest_framework.authentication import BaseAuthentication

from communication import organizations, services
from communication.auth import tokens
from communication.exceptions import TokenError


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def authenticate_token(token: str):
    """``(principal, claims)`` for a token: a ``User`` for user tokens, a ServicePrincipal for
    service tokens. Raises TokenError."""
    claims = tokens.verify(token)
    if tokens.is_service_token(claims):
        return tokens.principal_for(claims), claims
    user = services.user_sync_from_claims(claims)
    if not user.is_active:
        raise TokenError("User is deactivated")
    # An organization not known locally is looked up through the identity service; a known one
    # costs nothing (organizations.organization_sync_claim).
    organizations.organization_sync_claim(user.organization)
    return user, claims


class JWTAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None
        token = bearer_token(header)
        if token is None:
            raise TokenError("Authorization header must be 'Bearer <token>'")
        return authenticate_token(token)

    def authenticate_header(self, request):
        # Without it DRF answers 403 to a missing token; with it, 401 + WWW-Authenticate.
        return 'Bearer realm="api"'
