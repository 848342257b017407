"""Who may do what with templates: a service with one of the scopes, or a staff user."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from communication.auth.tokens import ServicePrincipal

MANAGE = ("templates:manage",)
RENDER = ("templates:render", "notifications:send")
READ = ("templates:read", "templates:manage", "templates:render", "notifications:send")


def ScopeOrStaff(*scopes: str, staff: bool = True) -> type[BasePermission]:  # noqa: N802
    """A service token carrying any one of ``scopes``, or (with ``staff``) a staff user's token.

    Refusals are 403 ``scope_missing``, as for ``HasScope``.
    """

    class _ScopeOrStaff(BasePermission):
        message = f"This endpoint needs one of the scopes: {' '.join(scopes)}" + (
            ", or a staff user." if staff else "."
        )
        code = "scope_missing"

        def has_permission(self, request, view):
            user = request.user
            if not user or not user.is_authenticated:
                return False
            if isinstance(user, ServicePrincipal):
                return bool(set(scopes) & user.scopes)
            return staff and bool(user.is_staff and user.is_active)

    _ScopeOrStaff.__name__ = f"ScopeOrStaff({', '.join(scopes)})"
    return _ScopeOrStaff
