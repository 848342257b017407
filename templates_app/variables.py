"""Checking render data against a template's variable schema before anything is rendered.

JSON has no dates or decimals: values declared ``date``, ``datetime`` or ``number`` arrive as
strings or numbers and leave as ``date``, aware ``datetime`` and ``Decimal`` so that the locale
filters format them exactly.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL_RE = re.compile(r"^(https?://|[a-z][a-z0-9+.-]*://)[^\s]+$", re.IGNORECASE)


class VariableError(Exception):
    """A value that does not match its declared type (``name`` says which variable)."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name
        self.message = message


class MissingVariablesError(Exception):
    def __init__(self, names: list[str]):
        super().__init__(", ".join(names))
        self.names = names


def _parse_datetime(value) -> dt.datetime:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ValueError
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _string(value):
    if not isinstance(value, str):
        raise ValueError
    return value


def _integer(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError
    return value


def _number(value):
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | Decimal):
        return value
    if not isinstance(value, float | str):
        raise ValueError
    number = Decimal(str(value).strip())
    if not number.is_finite():
        raise ValueError
    return number


def _boolean(value):
    if not isinstance(value, bool):
        raise ValueError
    return value


def _date(value):
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value)
    raise ValueError


def _matching(pattern: re.Pattern):
    def check(value):
        if not isinstance(value, str) or not pattern.match(value):
            raise ValueError
        return value

    return check


def _instance(kind: type):
    def check(value):
        if not isinstance(value, kind):
            raise ValueError
        return value

    return check


_COERCERS = {
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "date": _date,
    "datetime": _parse_datetime,
    "url": _matching(_URL_RE),
    "email": _matching(_EMAIL_RE),
    "list": _instance(list),
    "object": _instance(dict),
}


def coerce(spec: dict, value):
    """``value`` as the variable described by ``spec`` holds it, or :class:`VariableError`."""
    name = spec.get("name", "?")
    kind = spec.get("type", "string")
    if value is None:
        if spec.get("required", True):
            raise VariableError(name, f"{name!r} may not be null.")
        return None
    coercer = _COERCERS.get(kind)
    if coercer is None:
        raise VariableError(name, f"{name!r} has an unknown type {kind!r}.")
    try:
        return coercer(value)
    except (ValueError, InvalidOperation, TypeError) as exc:
        raise VariableError(name, f"{name!r} must be {_describe(kind)}.") from exc


def _describe(kind: str) -> str:
    return {
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "date": "a date (YYYY-MM-DD)",
        "datetime": "a date and time (ISO 8601)",
        "url": "a URL",
        "email": "an email address",
        "list": "a list",
        "object": "an object",
    }.get(kind, kind)


def validate(schema: list[dict], data: dict) -> tuple[dict, list[str]]:
    """The render context for ``data``, and warnings.

    Raises :class:`MissingVariablesError` naming every required variable that is absent, then
    :class:`VariableError` for the first value of the wrong type. Keys the schema does not declare
    are passed through and reported as warnings (a caller sending more than needed is not an
    error, but a typo in a name should be visible in the preview).
    """
    if not isinstance(data, dict):
        raise VariableError("data", "data must be an object.")
    missing = [
        spec["name"] for spec in schema if spec.get("required", True) and spec["name"] not in data
    ]
    if missing:
        raise MissingVariablesError(missing)
    context = dict(data)
    declared = set()
    for spec in schema:
        declared.add(spec["name"])
        if spec["name"] in data:
            context[spec["name"]] = coerce(spec, data[spec["name"]])
    warnings = [
        f"Variable {name!r} is not declared by the template."
        for name in data
        if name not in declared
    ]
    return context, warnings


def examples(schema: list[dict]) -> dict:
    """Sample data from the schema's examples (previews in the admin and without data)."""
    return {spec["name"]: spec["example"] for spec in schema if "example" in spec}
