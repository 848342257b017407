from __future__ import annotations

from rest_framework.permissions import BasePermission

from communication.auth.tokens import ServicePrincipal


class IsUser(BasePermission):
    """An end user (a user token); service tokens are refused."""

    message = "This endpoint is for user tokens."
    code = "permission_denied"

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated) and not isinstance(
            request.user, ServicePrincipal
        )


def HasScope(*required: str) -> type[BasePermission]:  # noqa: N802 - reads as a class in views
    """A permission class: a service token carrying every scope in ``required``.

    ``permission_classes = [HasScope("notifications:send")]``.
    """

    class _HasScope(BasePermission):
        message = f"This endpoint needs the scope(s): {' '.join(required)}."
        code = "scope_missing"
        scopes = frozenset(required)

        def has_permission(self, request, view):
            user = request.user
            if not isinstance(user, ServicePrincipal):
                return False
            return self.scopes <= user.scopes

    _HasScope.__name__ = f"HasScope({', '.join(required)})"
    return _HasScope


def HasRole(*roles: str) -> type[BasePermission]:  # noqa: N802
    """A user token whose ``roles`` include one of ``roles`` (e.g. ``support_agent``)."""

    class _HasRole(BasePermission):
        message = f"This endpoint needs one of the roles: {', '.join(roles)}."
        code = "permission_denied"

        def has_permission(self, request, view):
            user = request.user
            if not user or isinstance(user, ServicePrincipal) or not user.is_authenticated:
                return False
            return bool(set(roles) & set(user.roles))

    return _HasRole


def ScopeOrStaff(*scopes: str) -> type[BasePermission]:  # noqa: N802
    """A service token carrying any one of ``scopes``, or the token of an active staff user.

    Refusals are 403 ``scope_missing``, as for ``HasScope``.
    """

    class _ScopeOrStaff(BasePermission):
        message = f"This endpoint needs one of the scopes: {' '.join(scopes)}, or a staff user."
        code = "scope_missing"

        def has_permission(self, request, view):
            user = request.user
            if not user or not user.is_authenticated:
                return False
            if isinstance(user, ServicePrincipal):
                return bool(set(scopes) & user.scopes)
            return bool(user.is_staff and user.is_active)

    _ScopeOrStaff.__name__ = f"ScopeOrStaff({', '.join(scopes)})"
    return _ScopeOrStaff
