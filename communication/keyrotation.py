"""Key rotation of the encrypted model fields (``communication.fields``): every encrypted value
that an older key of ``FIELD_ENCRYPTION_KEYS`` wrote is re-encrypted with the newest.

The columns are found from the models (every concrete ``EncryptedField``), so a new encrypted
field is rotated without being listed here. Each batch is its own short transaction that locks
only its rows (``SKIP LOCKED``: a row being written is left to a later pass, and its writer, on
the new key list, re-encrypts it anyway), so the service keeps running. A value already under
the newest key is never selected again: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import connection, transaction
from django.db.models import Model

from communication.audit import audit_record
from communication.fields import EncryptedField, keyring, reencrypt

logger = logging.getLogger(__name__)

BATCH = 1000
# A pass that still finds rows (locked by writers during the previous one) runs again, up to
# this many times; what is left then is reported, and a later run takes it.
PASSES = 5


def encrypted_tables() -> Iterator[tuple[type[Model], list[str]]]:
    """``(model, [encrypted column, …])`` of every model that has encrypted fields."""
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        columns = [f.column for f in model._meta.concrete_fields if isinstance(f, EncryptedField)]
        if columns:
            yield model, columns


def _stale_condition(columns: list[str]) -> str:
    qn = connection.ops.quote_name
    return " OR ".join(
        f"({qn(c)} IS NOT NULL AND substring({qn(c)} from 1 for %(size)s) <> %(head)s)"
        for c in columns
    )


def _params() -> dict[str, Any]:
    head = keyring().current_header
    return {"head": head, "size": len(head)}


def stale_counts() -> dict[str, int]:
    """``{table: rows holding a value of an older key}``, tables with none left out."""
    out = {}
    with connection.cursor() as cursor:
        for model, columns in encrypted_tables():
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(
                f"SELECT count(*) FROM {table} WHERE {_stale_condition(columns)}",  # noqa: S608
                _params(),
            )
            (count,) = cursor.fetchone()
            if count:
                out[model._meta.db_table] = count
    return out


def _rotate_batch(model: type[Model], columns: list[str], after: Any, size: int) -> list:
    qn = connection.ops.quote_name
    table, pk = qn(model._meta.db_table), qn(model._meta.pk.column)
    selected = ", ".join(qn(c) for c in columns)
    where = "" if after is None else f"{pk} > %(after)s AND "
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {pk}, {selected} FROM {table} "  # noqa: S608
            f"WHERE {where}({_stale_condition(columns)}) "
            f"ORDER BY {pk} LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
            {**_params(), "after": after, "limit": size},
        )
        rows = cursor.fetchall()
        if rows:
            assignments = ", ".join(f"{qn(c)} = %s" for c in columns)
            cursor.executemany(
                f"UPDATE {table} SET {assignments} WHERE {pk} = %s",  # noqa: S608
                [
                    [None if v is None else reencrypt(bytes(v)) for v in values] + [key]
                    for key, *values in rows
                ],
            )
    return [row[0] for row in rows]


@dataclass
class Rotation:
    key_id: str
    rotated: dict[str, int] = field(default_factory=dict)  # {table: rows re-encrypted}
    left: dict[str, int] = field(default_factory=dict)  # {table: rows still on an older key}

    @property
    def total(self) -> int:
        return sum(self.rotated.values())


def rotate(*, batch: int = BATCH, progress: Callable[[str, int], None] | None = None) -> Rotation:
    """Re-encrypts every value an older key wrote; returns what it did and what is left."""
    result = Rotation(key_id=keyring().current)
    for _ in range(PASSES):
        moved = 0
        for model, columns in encrypted_tables():
            table = model._meta.db_table
            after = None
            while True:
                keys = _rotate_batch(model, columns, after, batch)
                if not keys:
                    break
                after = keys[-1]
                moved += len(keys)
                result.rotated[table] = result.rotated.get(table, 0) + len(keys)
                if progress is not None:
                    progress(table, result.rotated[table])
        if not moved:
            break
    result.left = stale_counts()
    with transaction.atomic():
        audit_record(
            "keys.rotate",
            "encryption",
            result.key_id,
            changes={"rows": result.total, "tables": result.rotated, "left": result.left},
        )
    logger.info("key rotation to %s: %d rows re-encrypted", result.key_id, result.total)
    return result
