"""Errors of rendering: each a 400 with a code the API contract names."""

from __future__ import annotations

from typing import Any

from rest_framework import status

from communication.exceptions import APIError, ConflictError, ServiceUnavailableError


class TemplateError(APIError):
    """A template could not be rendered; ``code`` says why, ``detail`` says where."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "template_error"

    def __init__(
        self, detail: str, *, field: str | None = None, line: int | None = None, **kw: Any
    ) -> None:
        self.field = field
        self.line = line
        self.message = detail
        where = ""
        if field:
            where = f"In {field}" + (f", line {line}" if line else "") + ": "
        elif line:
            where = f"Line {line}: "
        super().__init__(where + detail, code=kw.pop("code", self.default_code), **kw)


class MissingVariableError(TemplateError):
    """``variable`` is the first missing name; ``variables`` all of them, each in ``fields``."""

    default_code = "missing_variable"

    def __init__(
        self,
        variable: str,
        detail: str | None = None,
        *,
        variables: list[str] | None = None,
        **kw: Any,
    ) -> None:
        self.variable = variable
        self.variables = variables or [variable]
        super().__init__(
            detail or f"Missing variable {variable!r}.",
            fields={name: ["This variable is required."] for name in self.variables},
            **kw,
        )


class InvalidVariableError(TemplateError):
    default_code = "invalid_variable"


class TemplateSyntaxError(TemplateError):
    default_code = "template_syntax"


class TemplateSecurityError(TemplateError):
    default_code = "template_security"


class RenderLimitError(TemplateError):
    default_code = "render_limit"


class RenderBusyError(ServiceUnavailableError):
    """Every render thread is busy and the queue is full: try again shortly."""

    default_code = "render_busy"
    default_detail = "Too many renders are running; try again shortly."


class NoLiveVersionError(APIError):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "no_live_version"


class InvalidTransitionError(ConflictError):
    default_code = "invalid_transition"


class FourEyesError(APIError):
    """The author of a version tried to approve it."""

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "approval_by_author"
    default_detail = "A version must be approved by someone other than its author."
