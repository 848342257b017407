"""NUL characters are refused where input enters, with a 400 naming the field.

PostgreSQL text and JSONB cannot hold ``\\x00``: a NUL that reaches a query is a ``DataError``,
a 500, and DRF's ``CharField`` refuses it only in the fields it declares (not in ``DictField`` /
``JSONField`` values, nor in query parameters a view reads itself). So the rule is applied where
input becomes Python values, once for every endpoint:

- the request line (query parameters and the path segments the URL captured):
  :class:`NulRefusalMiddleware`, which sees every view, DRF or not;
- the body: the parsers of ``communication.api.parsers`` (JSON, form, multipart), which every
  DRF view uses through ``DEFAULT_PARSER_CLASSES``;
- provider webhooks, which parse their bodies themselves: ``notifications.webhooks.base``.

All three name fields the way the error handler flattens DRF's errors
(``recipients[0].user_id``, ``data.items[2]``), through :func:`nul_fields`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from rest_framework.exceptions import ValidationError

NUL = "\x00"
MESSAGE = "NUL characters are not allowed."


def field_name(key: object, prefix: str = "") -> str:
    """``key`` under ``prefix``, as the error handler spells nested fields. A NUL in the key
    itself is written as the JSON escape the client sent (``a\\u0000b``)."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    name = str(key).replace(NUL, "\\u0000")
    return f"{prefix}.{name}" if prefix else name


def nul_fields(value: Any, prefix: str = "") -> list[str]:
    """The fields of a parsed document (dicts, lists, strings, and scalars) holding a NUL, in
    a key or a string value at any depth."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                found.append(path or "non_field_errors")
        elif isinstance(item, Mapping):
            for key, child in item.items():
                name = field_name(key, path)
                if isinstance(key, str) and NUL in key:
                    found.append(name)
                stack.append((name, child))
        elif isinstance(item, (list, tuple)):
            stack.extend((field_name(i, path), child) for i, child in enumerate(item))
    return sorted(set(found))


def multi_nul_fields(pairs: Iterable[tuple[str, list[Any]]]) -> list[str]:
    """The fields of a ``QueryDict``/``MultiValueDict`` (``.lists()``) holding a NUL in their
    name or in one of their values (strings, or uploaded files by their name)."""
    found = []
    for key, values in pairs:
        names = [getattr(v, "name", v) for v in values]
        if NUL in key or any(isinstance(v, str) and NUL in v for v in names):
            found.append(field_name(key))
    return sorted(set(found))


def nul_error(fields: Iterable[str]) -> ValidationError:
    """The 400 ``validation_error`` naming ``fields``, raised from a parser or a view."""
    return ValidationError({name: [MESSAGE] for name in fields})


def nul_response(fields: Iterable[str]) -> HttpResponse:
    """The same answer as :func:`nul_error` gets through the API's error handler, for code
    outside a DRF view (a middleware, a plain Django view)."""
    return JsonResponse(
        {
            "code": "validation_error",
            "detail": "Invalid input.",
            "fields": {name: [MESSAGE] for name in fields},
        },
        status=400,
    )


def nul_allowed(view):
    """Marks a view that answers every input itself and never stores it (the open pixel, whose
    answer must not depend on its input): the NUL refusal leaves it alone."""
    view.nul_allowed = True
    return view


class NulRefusalMiddleware(MiddlewareMixin):
    """Refuses a request whose query string or captured path segments hold a NUL, before the
    view runs. The query is decoded by Django (``%00`` included); the path segments are the
    URL pattern's arguments (``users/<user_id>``, admin object ids)."""

    def process_view(
        self, request: HttpRequest, view_func, view_args: tuple, view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        if getattr(view_func, "nul_allowed", False):
            return None
        fields = multi_nul_fields(request.GET.lists()) if request.META.get("QUERY_STRING") else []
        fields += [
            field_name(key)
            for key, value in view_kwargs.items()
            if isinstance(value, str) and NUL in value
        ]
        fields += [f"path[{i}]" for i, value in enumerate(view_args) if NUL in str(value)]
        return nul_response(fields) if fields else None
