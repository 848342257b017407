"""API exceptions that services raise; ``communication.errors`` renders them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import exceptions, status


class APIError(exceptions.APIException):
    """An error a service raises with its HTTP status and machine code."""

    # Annotated so that subclasses may answer with another status than 400.
    status_code: int = status.HTTP_400_BAD_REQUEST
    default_code = "validation_error"
    default_detail = "Invalid request."

    def __init__(
        self,
        detail: str | None = None,
        code: str | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail=detail, code=code)
        self.code = code or self.default_code
        self.fields = fields


class ConflictError(APIError):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


class UnprocessableError(APIError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "unprocessable"
    default_detail = "The request cannot be processed."


class PayloadTooLargeError(APIError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


class NotFoundError(APIError):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "not_found"
    default_detail = "Not found."


class CommunicationNotAllowedError(APIError):
    """The organizations' communication policy refuses this contact (``detail`` names the rule:
    ``direct_scope=…``, ``group_create_roles``, ``support_routing``); nothing was created."""

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "communication_not_allowed"
    default_detail = "The communication policy does not allow this."


class TokenError(exceptions.AuthenticationFailed):
    """A 401; ``code`` is one of token_missing, token_expired, token_invalid."""

    def __init__(self, detail: str, code: str = "token_invalid") -> None:
        super().__init__(detail=detail, code=code)
        self.code = code


class ScopeMissingError(exceptions.PermissionDenied):
    default_code = "scope_missing"


class ServiceUnavailableError(APIError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"
    default_detail = "A service this request depends on is unavailable."


class DatabaseUnavailableError(ServiceUnavailableError):
    """PostgreSQL is unreachable (``communication.dboutage``); nothing of the request was
    committed. Answered with ``Retry-After``."""

    default_detail = "The database is unreachable; retry after the Retry-After delay."

    def __init__(self) -> None:
        super().__init__()
        self.retry_after = settings.DB_UNAVAILABLE_RETRY_AFTER
