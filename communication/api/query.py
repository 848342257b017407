"""Query parameters read strictly: a value that is not one the endpoint knows is a 400 naming the
parameter, never silently taken for its default (``?offset=null``, ``?status=typo``,
``?unread=maybe``). The pagination classes of every list read theirs the same way."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from django.utils.dateparse import parse_date, parse_datetime
from django.utils.timezone import is_naive, make_aware
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination, LimitOffsetPagination

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def _invalid(name: str, message: str) -> ValidationError:
    return ValidationError({name: [message]})


def flag(params: Mapping[str, str], name: str) -> bool | None:
    """A boolean parameter (``true``/``false``, ``1``/``0``, ``yes``/``no``); None when absent."""
    value = params.get(name)
    if value is None:
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _invalid(name, "Must be true or false.")


def choice(params: Mapping[str, str], name: str, choices: Iterable[str]) -> str | None:
    """One of ``choices``; None when absent or empty."""
    value = params.get(name)
    if not value:
        return None
    allowed = list(choices)
    if value not in allowed:
        raise _invalid(name, f"Must be one of: {', '.join(allowed)}.")
    return value


def moment(params: Mapping[str, str], name: str) -> dt.datetime | None:
    """An ISO 8601 date or date-time (a naive one is UTC); None when absent or empty."""
    value = params.get(name)
    if not value:
        return None
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            parsed = dt.datetime(day.year, day.month, day.day) if day else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise _invalid(name, "Must be an ISO 8601 date or date-time.")
    return make_aware(parsed, dt.UTC) if is_naive(parsed) else parsed


def integer(
    params: Mapping[str, str], name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    """A whole number of at least ``minimum`` (capped at ``maximum``); None when absent."""
    value = params.get(name)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or int(value) < minimum:
        raise _invalid(name, f"Must be a whole number of at least {minimum}.")
    return min(int(value), maximum) if maximum is not None else int(value)


class StrictCursorPagination(CursorPagination):
    """``?limit=`` and ``?cursor=`` checked: a bad one is a 400, not the default page."""

    def get_page_size(self, request):
        name = self.page_size_query_param or "limit"
        size = integer(request.query_params, name, minimum=1, maximum=self.max_page_size)
        return self.page_size if size is None else size

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except Exception as exc:  # DRF answers a cursor it cannot read with a 404
            raise _invalid(self.cursor_query_param, "Invalid cursor.") from exc


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=`` and ``?offset=`` checked: a bad one is a 400, not the first page."""

    def get_limit(self, request):
        limit = integer(
            request.query_params, self.limit_query_param, minimum=1, maximum=self.max_limit
        )
        return self.default_limit if limit is None else limit

    def get_offset(self, request):
        return integer(request.query_params, self.offset_query_param, minimum=0) or 0
