"""Retention: what has outlived its ``RETENTION_<KIND>_DAYS`` goes, in small batches.

Every registry entry with a retention kind whose days are above 0 is swept: its rows older than
``now - days`` (by ``age_field``) are deleted, anonymised or tombstoned as ``expire`` says,
through ``apply.erase_queryset`` (short transactions of a thousand rows). Kinds with a path of
their own (event partitions, the audit trail's anchored removal, notifications still being
sent) declare an ``expirer``. Each run leaves one ``retention.run`` audit entry with the counts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import OperationalError, connection, models
from django.utils import timezone

from communication.audit import audit_record
from communication.compliance import registry
from communication.compliance.apply import erase_queryset
from communication.compliance.registry import PersonalData

logger = logging.getLogger(__name__)

ACTION = "retention.run"
OBJECT = "compliance.retention"
LOCK_SQL = "hashtext('compliance.retention')"


def retention_days(kind: str) -> int:
    return int(settings.RETENTION_DAYS.get(kind, 0))


def retention_cutoff(kind: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """The moment before which ``kind`` has expired; None when it is kept forever."""
    days = retention_days(kind)
    if days <= 0:
        return None
    return (now or timezone.now()) - dt.timedelta(days=days)


def expired_rows(entry: PersonalData, cutoff: dt.datetime) -> models.QuerySet:
    """The rows of a row-based entry older than ``cutoff``."""
    return entry.model_class._default_manager.filter(**{f"{entry.age_field}__lt": cutoff})


def expire_rows(entry: PersonalData, queryset: models.QuerySet) -> int:
    """Applies the entry's expiry mode to ``queryset``: the path expirers of row-based kinds
    with an extra condition (deliveries still in flight) share."""
    return erase_queryset(entry, queryset, mode=entry.expire or entry.erase)


def retention_run(now: dt.datetime | None = None) -> dict[str, int]:
    """Expires every kind past its retention; returns the rows removed per kind.

    Safe to run twice at once: a run that finds another holding the lock returns ``{}`` and
    records nothing.
    """
    now = now or timezone.now()
    with _run_lock() as acquired:
        if not acquired:
            return {}
        counts: dict[str, int] = {}
        for entry in registry.entries():
            if entry.retention is None:
                continue
            cutoff = retention_cutoff(entry.retention, now)
            if cutoff is None:
                continue
            counts.setdefault(entry.retention, 0)
            try:
                if entry.expirer is not None:
                    removed = entry.expirer(cutoff)
                else:
                    removed = expire_rows(entry, expired_rows(entry, cutoff))
            except OperationalError:
                # A lock wait past the batch's lock_timeout: this kind waits for the next run.
                logger.warning("retention of %s stopped on a busy row", entry.name, exc_info=True)
                continue
            counts[entry.retention] += removed
        audit_record(ACTION, OBJECT, changes=counts)
        return counts


@contextmanager
def _run_lock() -> Iterator[bool]:
    # A session lock, not a transaction one: each batch commits on its own.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_try_advisory_lock({LOCK_SQL})")
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT pg_advisory_unlock({LOCK_SQL})")
