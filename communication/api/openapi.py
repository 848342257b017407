"""The schema's error answers: every operation lists the 4xx answers it can give, in the one error
shape of ``communication.errors`` (a drf-spectacular postprocessing hook, so no view repeats
them)."""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi

ERROR = {
    "type": "object",
    "description": "The API's one error shape.",
    "properties": {
        "code": {"type": "string", "example": "validation_error"},
        "detail": {"type": "string"},
        "fields": {
            "type": "object",
            "description": "Per field (a path such as ``recipients[0].phone``), what is wrong.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "required": ["code", "detail"],
}
RATE_LIMITED = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "enum": ["rate_limited"]},
        "detail": {"type": "string"},
        "retry_after": {"type": "integer", "description": "Seconds before a retry can pass."},
    },
    "required": ["code", "detail"],
}

UNAVAILABLE = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "``unavailable``: the database is unreachable."},
        "detail": {"type": "string"},
        "retry_after": {"type": "integer", "description": "Seconds before a retry."},
    },
    "required": ["code", "detail"],
}

_REF = {"$ref": "#/components/schemas/Error"}
_DESCRIPTIONS = {
    "400": "Invalid input (a field, a query parameter, a filter value).",
    "401": "No token, or one that is expired or invalid.",
    "403": "The token lacks the scope, or is not of the right kind (user or service).",
    "404": "No such object, or not yours.",
}


def _error(status: str) -> dict[str, Any]:
    return {"description": _DESCRIPTIONS[status], "content": {"application/json": {"schema": _REF}}}


def add_error_responses(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """Adds to each operation the errors it may answer: 400, 429 and 503 everywhere, 401 and 403
    where a token is required, 404 where the path names an object. An answer the view already
    documents is kept."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR)
    schemas.setdefault("RateLimited", RATE_LIMITED)
    schemas.setdefault("Unavailable", UNAVAILABLE)
    secured = bool(result.get("security"))
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in ("get", "put", "post", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            statuses = ["400"]
            security = operation.get("security", result.get("security") if secured else None)
            if security and any(requirement for requirement in security):
                statuses += ["401", "403"]
            if "{" in path:
                statuses.append("404")
            for status in statuses:
                responses.setdefault(status, _error(status))
            responses.setdefault(
                "429",
                {
                    "description": "Over a rate limit; retry after ``Retry-After`` seconds.",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/RateLimited"}}
                    },
                },
            )
            responses.setdefault(
                "503",
                {
                    "description": "The database is unreachable: nothing was written; retry "
                    "after ``Retry-After`` seconds.",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Unavailable"}}
                    },
                },
            )
    return result


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, except that a viewset whose ``list`` answers one object (``/me``,
    the VAPID key: a resource without an id) declares ``single_object = True`` and is described
    as that object, not an array of it."""

    def _is_list_view(self, serializer: Any = None) -> bool:
        if getattr(self.view, "single_object", False):
            return False
        return bool(super()._is_list_view(serializer))
