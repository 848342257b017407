"""Applies an erase mode to rows: the one path erasure and retention share.

Rows go in batches of primary keys, each batch its own short transaction that waits at most
``LOCK_TIMEOUT`` for a row lock: a sweep over a large table never holds a long lock, and a
batch that meets a busy row fails alone instead of queueing every writer behind it. The files
of removed rows are deleted once their batch has committed (or the caller's transaction), so a rolled-back batch never loses
a file its row still names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from django.db import connection, models, transaction
from django.db.models import F
from django.db.models.functions import Coalesce, Now
from django.db.models.lookups import Exact

from communication.compliance.registry import Erase, PersonalData
from communication.fields import EncryptedField, PlaintextLength

logger = logging.getLogger(__name__)

BATCH = 1000
LOCK_TIMEOUT = "2s"


def erase_queryset(
    entry: PersonalData,
    queryset: models.QuerySet,
    *,
    mode: Erase | None = None,
    batch: int | None = None,
) -> int:
    """Applies ``mode`` (``entry.erase`` by default) to every row of ``queryset`` and returns
    how many rows it changed or removed.

    DELETE removes the rows (Django's cascades included); ANONYMISE and TOMBSTONE write
    ``entry.fields`` (a value, or a callable of the row's primary key), and TOMBSTONE marks the
    row in ``tombstone_field`` when the entry names one. Rows whose personal
    fields already hold what anonymising writes are skipped, so running it again counts
    nothing. ``entry.files`` are deleted from ``entry.storage()`` with their rows (and, when
    anonymising, when the file field is among ``entry.fields``).
    """
    mode = mode or entry.erase
    batch = batch or BATCH
    model = queryset.model
    static = {name: value for name, value in entry.fields.items() if not callable(value)}
    computed = {name: value for name, value in entry.fields.items() if callable(value)}
    if mode is not Erase.DELETE:
        if not entry.fields:
            return 0
        marker = entry.tombstone_field
        if static and not computed:
            # Already anonymised rows are left alone: the sweep converges.
            done_already = _all_equal(model, static)
            if done_already is not None:
                if mode is Erase.TOMBSTONE and marker:
                    done_already &= models.Q(**{f"{marker}__isnull": False})
                queryset = queryset.exclude(done_already)
    files = (
        entry.files
        if mode is Erase.DELETE
        else tuple(name for name in entry.files if name in entry.fields)
    )
    done = 0
    for pks in _pk_batches(queryset, batch):
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            rows = model._default_manager.filter(pk__in=pks)
            if files and entry.storage is not None:
                names = [name for values in rows.values_list(*files) for name in values if name]
                if names:
                    # After the commit (the caller's, when this runs inside its transaction).
                    transaction.on_commit(partial(_delete_files, entry.storage(), names))
            if mode is Erase.DELETE:
                _, per_model = rows.delete()
                done += per_model.get(model._meta.label, 0)
            else:
                done += _anonymise(model, pks, static, computed)
                if mode is Erase.TOMBSTONE and marker:
                    rows.update(**{marker: Coalesce(F(marker), Now())})
    return done


def _all_equal(model: type[models.Model], values: Mapping[str, Any]) -> models.Q | None:
    """The rows whose fields all hold ``values`` already; None when SQL cannot tell (an
    encrypted field anonymised to something but an empty value)."""
    q = models.Q()
    for name, value in values.items():
        field = model._meta.get_field(name)
        if value is None:
            q &= models.Q(**{f"{name}__isnull": True})
        elif isinstance(field, EncryptedField):
            # Ciphertexts differ at every write: an empty plaintext is told by its length alone.
            if value not in ("", {}):
                return None
            q &= models.Q(Exact(PlaintextLength(F(name)), len(field.to_bytes(value))))
        else:
            q &= models.Q(**{name: value})
    return q


def _pk_batches(queryset: models.QuerySet, batch: int) -> Iterator[list[Any]]:
    """The primary keys of ``queryset`` in ascending batches, by keyset: rows that stay (once
    anonymised) are not read again."""
    last = None
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        pks = list(page.order_by("pk").values_list("pk", flat=True)[:batch])
        if not pks:
            return
        yield pks
        if len(pks) < batch:
            return
        last = pks[-1]


def _anonymise(
    model: type[models.Model],
    pks: list[Any],
    static: Mapping[str, Any],
    computed: Mapping[str, Callable[[Any], Any]],
) -> int:
    rows = model._default_manager.filter(pk__in=pks)
    changed = rows.update(**static) if static else len(pks)
    if computed:
        objs = []
        for pk in pks:
            obj = model(pk=pk)
            for name, make in computed.items():
                setattr(obj, name, make(pk))
            objs.append(obj)
        model._default_manager.bulk_update(objs, list(computed))
    return changed


def _delete_files(storage: Any, names: list[str]) -> None:
    for name in names:
        try:
            storage.delete(name)
        except OSError:
            # The row is gone; a file that cannot be removed now is logged without its name,
            # which may be the person's own file name.
            logger.warning("a removed row's file could not be deleted")
