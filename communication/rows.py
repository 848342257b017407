"""Inserting model instances of several tables in one statement, and reading rows back.

``insert_all([objs_a, objs_b, …])`` writes every list in a single ``WITH … INSERT`` statement
with one parameter per table: the rows as a JSON array, turned back into rows by
``jsonb_populate_recordset``. One round trip, none of the ORM's per-query compiler work, and a
statement whose text depends only on which tables it writes, so that PostgreSQL keeps its plan.
On the send path the four ``bulk_create`` calls this replaces (request, notifications,
deliveries, events) cost the web process more than the rest of the request.

Every value is the one the ORM would send: the field's ``pre_save`` (``auto_now_add``) and then
its ``get_db_prep_save``, so a custom field (an encrypted one, a JSON field with its own encoder)
stores here exactly what it stores through ``Model.objects.create``. Only then is the value
written in the text form PostgreSQL reads for the column's type (``\\x…`` for ``bytea``; a JSON
document travels as its text, parsed once by PostgreSQL). ``instance`` applies the converters
the ORM applies to a row it reads (``from_db_value``).

A single statement is atomic on its own; foreign keys are Django's ``DEFERRABLE INITIALLY
DEFERRED`` ones, checked at the end of the transaction. A field left to its database default
(``db_default``) in the first row is left to it in every row of the list. ``AutoField`` keys
are left to the database (their values are not read back).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import operator
import uuid
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import connection, connections
from django.db.models import AutoField, Field, Model
from django.db.models.expressions import Col, DatabaseDefault
from psycopg import Binary
from psycopg.types.json import Json, Jsonb

_JSON_TYPES = ("json", "jsonb")

_M = TypeVar("_M", bound=Model)

# One written field: its column, then its bound ``pre_save`` and ``get_db_prep_save``.
_Step = tuple[str, Callable[[Model], Any], Callable[..., Any]]


@cache
def _columns(model: type[Model]) -> tuple[Field[Any, Any], ...]:
    """The fields written for ``model``: concrete, not auto-incremented."""
    return tuple(
        f for f in model._meta.concrete_fields if not isinstance(f, AutoField) or not f.primary_key
    )


@cache
def _steps(model: type[Model]) -> tuple[_Step, ...]:
    """``(column, its value for an insert, get_db_prep_save)`` of each written field, bound once."""
    return tuple((f.column, _pre_save(f), f.get_db_prep_save) for f in _columns(model))


def _pre_save(field: Field[Any, Any]) -> Callable[[Model], Any]:
    """The field's ``pre_save`` for an insert; for a field that keeps ``Field.pre_save`` (the
    attribute as it is), the same read without a call through the field per value."""
    if type(field).pre_save is not Field.pre_save:
        return functools.partial(field.pre_save, add=True)
    return operator.attrgetter(field.attname)


@cache
def _json_columns(model: type[Model]) -> dict[str, str]:
    """``{column: its type}`` of the ``json``/``jsonb`` columns written for ``model``."""
    types = {f.column: f.db_type(connection) for f in _columns(model)}
    return {column: t for column, t in types.items() if t in _JSON_TYPES}


def _adapted_text(value: Json | Jsonb) -> str:
    """The text of a JSON document as psycopg's adapter writes it: its own ``dumps`` (the
    field's encoder)."""
    text = (value.dumps or json.dumps)(value.obj)
    return text.decode() if isinstance(text, bytes | bytearray | memoryview) else text


def _json_text(value: object) -> str | None:
    """The JSON text the ORM would send for a ``json``/``jsonb`` column: its adapter's text
    (:func:`_adapted_text`), or the text itself where a field prepares a string."""
    if isinstance(value, Json | Jsonb):
        return _adapted_text(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"a JSON column was prepared as {type(value).__name__}")


def _plain(value: object) -> object:
    """``value`` in PostgreSQL's text input form, for ``jsonb_populate_recordset``."""
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()  # full precision, unlike DjangoJSONEncoder
    if isinstance(value, Binary):
        value = value.obj
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()  # bytea's hex input format
    if isinstance(value, dt.timedelta):
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    if isinstance(value, Json | Jsonb):  # an element of an array of JSON documents
        return json.loads(_adapted_text(value))
    if isinstance(value, DatabaseDefault) or hasattr(value, "as_sql"):
        raise TypeError("rows writes values, not expressions (db_default only in every row)")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@cache
def _statement(model: type[Model], names: tuple[str, ...], where: str = "") -> str:
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    json_columns = _json_columns(model)
    # A JSON document arrives as a JSON string holding its text: read the text, parse it once.
    values = ", ".join(
        f"(r.{quote(n)} #>> '{{}}')::{json_columns[n]}" if n in json_columns else quote(n)
        for n in names
    )
    # Names come from the models; the rows are the parameter.
    return (
        f"INSERT INTO {table} ({', '.join(quote(n) for n in names)}) "  # noqa: S608
        f"SELECT {values} FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb) AS r"
        + (f" WHERE {where}" if where else "")
    )


def insert_statement(objs: Sequence[Model], where: str = "") -> tuple[str, str]:
    """``(sql, its one parameter: the rows as JSON)`` inserting ``objs`` (instances of one
    model), for :func:`insert_all` or a caller that puts it in a statement of its own;
    ``where`` filters the rows (named ``r``; a JSON column there holds its text, not the
    document)."""
    model = type(objs[0])
    steps = _steps(model)
    json_columns = _json_columns(model)
    db = connections[connection.alias]  # the thread's own connection, not the proxy per value
    rows = []
    for obj in objs:
        row = {column: prep(pre_save(obj), db) for column, pre_save, prep in steps}
        for column in json_columns:
            if not isinstance(row[column], DatabaseDefault):
                row[column] = _json_text(row[column])
        rows.append(row)
        obj._state.adding = False
        obj._state.db = db.alias
    names = tuple(c for c, v in rows[0].items() if not isinstance(v, DatabaseDefault))
    if len(names) < len(rows[0]):
        rows = [{c: row[c] for c in names} for row in rows]
    return (
        _statement(model, names, where),
        json.dumps(rows, default=_plain, separators=(",", ":")),
    )


def insert_all(groups: Sequence[Sequence[Model]]) -> None:
    """Inserts each non-empty list of same-model instances, all in one statement."""
    parts = [insert_statement(objs) for objs in groups if objs]
    if not parts:
        return
    *first, (last_sql, _) = parts
    sql = (
        "WITH " + ", ".join(f"i{n} AS ({s})" for n, (s, _) in enumerate(first)) + " " + last_sql
        if first
        else last_sql
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [rows for _, rows in parts])


@cache
def select_list(model: type[Model], alias: str) -> str:
    """``alias.col, …`` for every concrete field of ``model``, in :func:`instance`'s order."""
    return ", ".join(
        f"{alias}.{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields
    )


@cache
def _converters(
    model: type[Model],
) -> tuple[tuple[int, list[Callable[..., Any]], Col], ...]:
    """The ORM's converters for each column it reads (``SQLCompiler.get_converters``): the
    backend's, then the field's (``from_db_value``)."""
    found = []
    for index, field in enumerate(model._meta.concrete_fields):
        col = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if functions:
            found.append((index, functions, col))
    return tuple(found)


def instance(model: type[_M], values: Iterable[Any]) -> _M:
    """A model instance from a row of its concrete fields' columns (as ``select_list``), with
    the conversions the ORM applies to a row it reads."""
    values = list(values)
    for index, functions, col in _converters(model):
        for function in functions:
            values[index] = function(values[index], col, connection)
    return model.from_db(connection.alias, [f.attname for f in model._meta.concrete_fields], values)


def column(model: type[Model], name: str, values: Iterable[Any]) -> list[Any]:
    """``values`` of the field ``name`` of ``model`` as the ORM would send them
    (``get_db_prep_save``), for a raw statement that takes a column as an array parameter."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field):
        raise TypeError(f"{name} is not a column of {model.__name__}")
    return [field.get_db_prep_save(value, connection) for value in values]
