"""Inserting model instances of several tables in one statement.

``insert_all([objs_a, objs_b, …])`` writes every list in a single ``WITH … INSERT`` statement
with one parameter per table: the rows as a JSON array, turned back into rows by
``jsonb_populate_recordset``. One round trip, none of the ORM's per-query compiler work, and a
statement whose text depends only on which tables it writes: psycopg converts it once (it caches
statements of at most 50 parameters) and prepares it on the server after a few uses. On the send
path the four ``bulk_create`` calls this replaces (request, notifications, deliveries, events)
cost the web process more than the rest of the request.

A single statement is atomic on its own; foreign keys are Django's ``DEFERRABLE INITIALLY
DEFERRED`` ones, checked at the end of the transaction. Values go through each field's
``pre_save`` (``auto_now_add``), as ``bulk_create`` does; a field left to its database default
(``db_default``) in the first row is left to it in every row of the list. ``AutoField`` keys
are left to the database (their values are not read back).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from functools import cache

from django.db import connection
from django.db.models import AutoField, Model
from django.db.models.expressions import DatabaseDefault


@cache
def _columns(model: type[Model]) -> tuple:
    """The fields written for ``model``: concrete, not auto-incremented."""
    return tuple(
        f for f in model._meta.concrete_fields if not isinstance(f, AutoField) or not f.primary_key
    )


def _plain(value):
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()  # full precision, unlike DjangoJSONEncoder
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@cache
def _statement(model: type[Model], names: tuple[str, ...], where: str = "") -> str:
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(n) for n in names)
    # Names come from the models; the rows are the parameter.
    return (
        f"INSERT INTO {table} ({columns}) "  # noqa: S608
        f"SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb) AS r"
        + (f" WHERE {where}" if where else "")
    )


def insert_statement(objs: list[Model], where: str = "") -> tuple[str, str]:
    """``(sql, its one parameter: the rows as JSON)`` inserting ``objs`` (instances of one
    model), for :func:`insert_all` or a caller that puts it in a statement of its own;
    ``where`` filters the rows (named ``r``)."""
    model = type(objs[0])
    rows = []
    for obj in objs:
        rows.append({f.column: f.pre_save(obj, True) for f in _columns(model)})
        obj._state.adding = False
        obj._state.db = connection.alias
    names = tuple(c for c, v in rows[0].items() if not isinstance(v, DatabaseDefault))
    if len(names) < len(rows[0]):
        rows = [{c: row[c] for c in names} for row in rows]
    return (
        _statement(model, names, where),
        json.dumps(rows, default=_plain, separators=(",", ":")),
    )


def insert_all(groups: list[list[Model]]) -> None:
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
def _select(model: type[Model], column: str) -> str:
    table = connection.ops.quote_name(model._meta.db_table)
    # Names come from the models; the value is a parameter.
    return (
        f"SELECT {select_list(model, 'r')} FROM {table} AS r "  # noqa: S608
        f"WHERE r.{connection.ops.quote_name(column)} = %s LIMIT 1"
    )


@cache
def select_list(model: type[Model], alias: str) -> str:
    """``alias.col, …`` for every concrete field of ``model``, in :func:`instance`'s order."""
    return ", ".join(
        f"{alias}.{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields
    )


def instance(model: type[Model], values) -> Model:
    """A model instance from a row of its concrete fields' columns (as ``select_list``), with
    the conversions the ORM applies (JSON)."""
    fields = model._meta.concrete_fields
    values = [
        f.from_db_value(v, None, connection) if hasattr(f, "from_db_value") else v
        for f, v in zip(fields, values, strict=True)
    ]
    return model.from_db(connection.alias, [f.attname for f in fields], values)


def get(model: type[Model], field: str, value) -> Model | None:
    """``model.objects.filter(<field>=value).first()`` without the ORM's query compiler (for
    look-ups by a unique column on hot paths). None when there is no such row."""
    column = model._meta.get_field(field).column
    with connection.cursor() as cursor:
        cursor.execute(_select(model, column), [value])
        row = cursor.fetchone()
    return None if row is None else instance(model, row)
