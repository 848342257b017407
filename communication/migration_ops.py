"""Migration operations that move existing columns under encryption (``communication.fields``)
and fill the keyed-hash columns beside them.

``encrypt_columns`` changes each column to ``bytea`` (its text as UTF-8 bytes) and encrypts every
row in batches, in the migration's transaction; the model state becomes the encrypted field. It
runs backwards too (decrypts, then back to the old type). ``fill_lookup_hashes`` sets a
``LookupHashField`` for the rows that existed before it.
"""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations
from django.db.models import Field

from communication.fields import decrypt, encrypt

BATCH = 2000


def _rows(schema_editor, table: str, pk: str, columns: list[str]):
    """Every row's ``(pk, *columns)``, a batch at a time in pk order."""
    qn = schema_editor.quote_name
    selected = ", ".join(qn(c) for c in columns)
    last = None
    with schema_editor.connection.cursor() as cursor:
        while True:
            where = "" if last is None else f"WHERE {qn(pk)} > %s"
            cursor.execute(
                f"SELECT {qn(pk)}, {selected} FROM {qn(table)} {where} "  # noqa: S608
                f"ORDER BY {qn(pk)} LIMIT {BATCH}",
                [] if last is None else [last],
            )
            rows = cursor.fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]


def _rewrite(schema_editor, table: str, pk: str, columns: list[str], convert) -> None:
    qn = schema_editor.quote_name
    assignments = ", ".join(f"{qn(c)} = %s" for c in columns)
    sql = f"UPDATE {qn(table)} SET {assignments} WHERE {qn(pk)} = %s"  # noqa: S608
    for rows in _rows(schema_editor, table, pk, columns):
        params = [
            [None if v is None else convert(bytes(v)) for v in values] + [key]
            for key, *values in rows
        ]
        with schema_editor.connection.cursor() as cursor:
            cursor.executemany(sql, params)
    settle_constraints(schema_editor.connection)


def settle_constraints(connection) -> None:
    """Fires the deferred foreign key checks that writes queued (Django's are ``DEFERRABLE
    INITIALLY DEFERRED``): PostgreSQL refuses to alter or index a table with pending trigger
    events, which a migration's next operation may do. A data migration that writes calls it
    last."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def encrypt_columns(
    app_label: str, model_name: str, fields: dict[str, Field], old_types: dict[str, str]
) -> migrations.SeparateDatabaseAndState:
    """The operation that makes ``fields`` (``{name: the encrypted field}``) of ``model_name``
    encrypted, existing rows included. ``old_types`` gives each column's SQL type before (for
    the way back): ``{"content": "text", "payload": "jsonb"}``."""
    names = list(fields)

    def table_of(apps, schema_editor) -> tuple[str, str, list[str]]:
        model = apps.get_model(app_label, model_name)
        columns = [model._meta.get_field(name).column for name in names]
        return model._meta.db_table, model._meta.pk.column, columns

    def forwards(apps, schema_editor) -> None:
        table, pk, columns = table_of(apps, schema_editor)
        settle_constraints(schema_editor.connection)
        qn = schema_editor.quote_name
        alters = ", ".join(
            f"ALTER COLUMN {qn(c)} DROP DEFAULT, "
            f"ALTER COLUMN {qn(c)} TYPE bytea USING convert_to({qn(c)}::text, 'UTF8')"
            for c in columns
        )
        schema_editor.execute(f"ALTER TABLE {qn(table)} {alters}")
        _rewrite(schema_editor, table, pk, columns, encrypt)

    def backwards(apps, schema_editor) -> None:
        table, pk, columns = table_of(apps, schema_editor)
        _rewrite(schema_editor, table, pk, columns, decrypt)
        qn = schema_editor.quote_name
        alters = ", ".join(
            f"ALTER COLUMN {qn(c)} TYPE {old_types[name]} "
            f"USING convert_from({qn(c)}, 'UTF8')::{old_types[name]}"
            for name, c in zip(names, columns, strict=True)
        )
        schema_editor.execute(f"ALTER TABLE {qn(table)} {alters}")

    return migrations.SeparateDatabaseAndState(
        database_operations=[migrations.RunPython(forwards, backwards, elidable=False)],
        state_operations=[
            migrations.AlterField(model_name=model_name, name=name, field=field)
            for name, field in fields.items()
        ],
    )


def fill_lookup_hashes(
    app_label: str, model_name: str, hashes: dict[str, str]
) -> migrations.RunPython:
    """Sets each ``{hash field: source field}`` of ``model_name``'s existing rows (the source
    read through its field, decrypted when it is encrypted)."""

    def forwards(apps, schema_editor) -> None:
        model = apps.get_model(app_label, model_name)
        fields = [
            (target, model._meta.get_field(target), source) for target, source in hashes.items()
        ]
        manager = model._base_manager
        last = None
        while True:
            batch_qs = manager.order_by("pk")
            if last is not None:
                batch_qs = batch_qs.filter(pk__gt=last)
            batch = list(batch_qs.only("pk", *hashes.values())[:BATCH])
            if not batch:
                settle_constraints(schema_editor.connection)
                return
            for obj in batch:
                for target, field, source in fields:
                    setattr(obj, target, field.hash(getattr(obj, source)))
            manager.bulk_update(batch, list(hashes))
            last = batch[-1].pk

    return migrations.RunPython(forwards, migrations.RunPython.noop, elidable=False)


class AddIndexConcurrentlyOutsideTransactions(AddIndexConcurrently):
    """``CREATE INDEX CONCURRENTLY`` when the migration runs on its own (a deployment's
    ``migrate``: the table keeps taking writes), a plain ``CREATE INDEX`` when it runs inside a
    transaction, where the concurrent form cannot: the tests that migrate a schema forward within
    their own (``conftest.before_migration``)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.in_atomic_block:
            return migrations.AddIndex.database_forwards(
                self, app_label, schema_editor, from_state, to_state
            )
        return super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.in_atomic_block:
            return migrations.AddIndex.database_backwards(
                self, app_label, schema_editor, from_state, to_state
            )
        return super().database_backwards(app_label, schema_editor, from_state, to_state)
