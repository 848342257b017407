"""The API's rate limit: one DRF throttle (``DEFAULT_THROTTLE_CLASSES``) for every endpoint.

Each request counts against one group (``communication.ratelimit.GROUPS``): the group a view
declares in ``rate_limit_group`` (a name, or ``{action: name}``), else ``read`` for a safe method
and ``write`` for the others. The principal is the
user or the service the token names, or the client's address for a request without one (the
endpoints that allow anonymous callers; the others answer 401 before the throttle runs).
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import Throttled
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from communication import ratelimit


def group_for(request: Request, view: Any) -> str:
    declared: str | dict[str, str] | None = getattr(view, "rate_limit_group", None)
    if isinstance(declared, dict):
        declared = declared.get(getattr(view, "action", None) or "")
    if declared:
        return declared
    return "read" if request.method in SAFE_METHODS else "write"


def principal_for(request: Request) -> str:
    user = request.user
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.pk)  # a user's UUID, or "service:<client_id>" (ServicePrincipal.pk)
    return f"ip:{ratelimit.client_ip(request)}"


class RateLimitThrottle(BaseThrottle):
    """Refuses a request over its group's limit with ``Throttled`` (429 ``rate_limited``, with
    ``retry_after`` and ``Retry-After``: see communication.errors)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        group = group_for(request, view)
        limit = ratelimit.limit_for(group)
        if limit is None:
            return True
        wait = ratelimit.limiter.acquire(ratelimit.key_for(group, principal_for(request)), limit)
        if wait > 0:
            raise Throttled(
                wait=ratelimit.retry_after(wait), detail=f"Too many {group!r} requests."
            )
        return True
