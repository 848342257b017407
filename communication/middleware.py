from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from csp import middleware as csp
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.middleware import csrf

from communication import audit, dboutage, errors
from communication.logging import request_id_var

logger = logging.getLogger("communication.access")

_VALID_ID = re.compile(r"^[A-Za-z0-9\-_.:]{1,128}$")


class RequestIdMiddleware:
    """Tags the request (and every log line it causes) with an id, and writes the access log.

    An incoming ``X-Request-Id`` from a trusted proxy is kept when well-formed, so one id follows a
    call across services. The query string never reaches the log (it may hold ``token=``).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _begin(self, request):
        incoming = request.headers.get("X-Request-Id", "")
        rid = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = rid
        request._audit_token = audit.bind_request(request)
        return rid, request_id_var.set(rid), time.perf_counter()

    def _end(self, request, response, rid, token, started):
        response["X-Request-Id"] = rid
        logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        request_id_var.reset(token)
        audit.unbind_request(request._audit_token)
        return response

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        rid, token, started = self._begin(request)
        response = self.get_response(request)
        return self._end(request, response, rid, token, started)

    async def __acall__(self, request):
        rid, token, started = self._begin(request)
        response = await self.get_response(request)
        return self._end(request, response, rid, token, started)


class DatabaseOutageMiddleware:
    """A view that found the database unreachable answers ``503 unavailable`` with
    ``Retry-After`` (DRF's views answer so through ``errors.exception_handler``), without the
    500's traceback in the log for every request of the outage."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if dboutage.is_outage(exception):
            return errors.unavailable(request)
        return None


# The versioned API authenticates every request with a bearer token (DRF's JWTAuthentication): it
# has no session, CSRF cookie, Django user or flash messages. These four skip their work there.
API_PREFIX = "/api/v1/"


class _BrowserOnly:
    """Runs the wrapped middleware for every path except the bearer-token API."""

    get_response: Any
    async_mode: bool

    def __call__(self, request):
        if not self.async_mode and request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class SessionMiddleware(_BrowserOnly, sessions.SessionMiddleware):
    pass


class CsrfViewMiddleware(_BrowserOnly, csrf.CsrfViewMiddleware):
    pass


class AuthenticationMiddleware(_BrowserOnly, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(_BrowserOnly, messages.MessageMiddleware):
    pass


# The staff console's path: its policy is the site's, updated by CONTENT_SECURITY_POLICY_ADMIN_UPDATE.
ADMIN_PREFIX = "/admin/"


class CSPMiddleware(csp.CSPMiddleware):
    """django-csp's middleware, with the staff console's own additions on ``/admin/`` only."""

    def get_policy_parts(self, request, response, report_only=False):
        parts = super().get_policy_parts(request, response, report_only)
        if request.path_info.startswith(ADMIN_PREFIX) and parts.update is None and not report_only:
            parts.update = settings.CONTENT_SECURITY_POLICY_ADMIN_UPDATE
        return parts
