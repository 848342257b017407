"""One error shape for the whole API: ``{"code", "detail", "fields"?}``.

Codes: ``validation_error`` (400), ``token_missing`` / ``token_expired`` / ``token_invalid`` (401),
``scope_missing`` / ``permission_denied`` / ``communication_not_allowed`` (403), ``not_found``
(404), ``method_not_allowed`` (405), ``conflict`` (409), ``payload_too_large`` (413),
``unsupported_media_type`` (415), ``unprocessable`` (422), ``rate_limited`` (429, with
``retry_after`` in seconds and a ``Retry-After`` header), ``server_error`` (500), ``unavailable``
(503; while the database is unreachable with ``retry_after`` and ``Retry-After`` as for 429, see
``communication.dboutage``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from communication import dboutage
from communication.exceptions import (  # noqa: F401  (re-exported for callers)
    APIError,
    ConflictError,
    DatabaseUnavailableError,
    NotFoundError,
    PayloadTooLargeError,
    ScopeMissingError,
    TokenError,
    UnprocessableError,
)

logger = logging.getLogger(__name__)


# DRF's own codes, renamed to ours.
_DRF_CODES = {
    "not_authenticated": "token_missing",
    "authentication_failed": "token_invalid",
    "throttled": "rate_limited",
    "parse_error": "validation_error",
    "invalid": "validation_error",
    "error": "validation_error",
}
_STATUS_CODES = {
    400: "validation_error",
    401: "token_invalid",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
}


def _code_for(exc: exceptions.APIException) -> str:
    code = getattr(exc, "code", None)
    if not isinstance(code, str):
        code = exc.get_codes()
    if isinstance(code, str) and code:
        return _DRF_CODES.get(code, code)
    return _STATUS_CODES.get(exc.status_code, "error")


def _flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as ``{"recipients[0].phone": ["…"]}``."""

    def join(key) -> str:
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            return f"{prefix}[{key}]"
        if key == "non_field_errors" and prefix:
            return prefix
        return f"{prefix}.{key}" if prefix else str(key)

    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            out.update(_flatten(value, join(key)))
    elif isinstance(detail, list) and any(isinstance(v, (dict, list)) for v in detail):
        for i, value in enumerate(detail):
            if value:
                out.update(_flatten(value, join(i)))
    elif isinstance(detail, list):
        out.setdefault(prefix or "non_field_errors", []).extend(str(v) for v in detail)
    else:
        out.setdefault(prefix or "non_field_errors", []).append(str(detail))
    return out


def error_body(code: str, detail: str, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return body


def exception_handler(exc, context):
    if dboutage.is_outage(exc):
        exc = DatabaseUnavailableError()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLargeError(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )

    response = drf_exception_handler(exc, context)
    if response is None:
        return (
            None  # unexpected: Django's 500 handler logs it and answers JSON (see urls.handler500)
        )

    code = _code_for(exc)
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("validation_error", "Invalid input.", _flatten(exc.detail))
    else:
        detail = exc.detail
        if isinstance(detail, (list, dict)):
            body = error_body(code, "Invalid request.", _flatten(detail))
        else:
            body = error_body(code, str(detail))
        fields = getattr(exc, "fields", None)
        if fields:
            body["fields"] = fields
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, exceptions.Throttled) or retry_after is not None:
        # Clients read the wait from the body or from the header; both always say it.
        body["retry_after"] = max(1, int(getattr(exc, "wait", None) or retry_after or 1))
        response["Retry-After"] = str(body["retry_after"])
    if response.status_code == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        if code in ("token_invalid", "token_expired"):
            response["WWW-Authenticate"] = 'Bearer realm="api", error="invalid_token"'
    return Response(body, status=response.status_code, headers=dict(response.items()))


def json_error(request, code: str, detail: str, status_code: int) -> JsonResponse:
    return JsonResponse(error_body(code, detail), status=status_code)


def handler404(request, exception=None):
    return json_error(request, "not_found", "Not found.", 404)


def unavailable(request) -> HttpResponse:
    """The database outage's answer outside DRF (the same as ``exception_handler``'s): JSON,
    or a short page for the staff console and the web app."""
    exc = DatabaseUnavailableError()
    if request.path_info.startswith(("/admin/", "/app/")):
        response = HttpResponse(
            "<!doctype html><title>Unavailable</title><h1>Temporarily unavailable</h1>"
            f"<p>{exc.detail}</p>",
            status=503,
        )
    else:
        body = error_body(exc.code, str(exc.detail))
        body["retry_after"] = exc.retry_after
        response = JsonResponse(body, status=503)
    response["Retry-After"] = str(exc.retry_after)
    return response


def handler500(request):
    # A middleware's own query (a session saved, say) failing for an outage ends here too.
    if dboutage.is_outage(sys.exc_info()[1] or Exception()):
        return unavailable(request)
    return json_error(request, "server_error", "Internal server error.", 500)


def handler400(request, exception=None):
    return json_error(request, "validation_error", "Bad request.", 400)


def handler403(request, exception=None):
    return json_error(request, "permission_denied", "Permission denied.", 403)
