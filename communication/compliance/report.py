"""The compliance report: retention per kind, erasures and exports done, the audit chain.

Every figure is cheap to compute on a large database: the oldest row through the age field's
index, the rows past due counted no further than ``PAST_DUE_LIMIT``, the last run read from its
audit entry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from django.conf import settings
from django.db.models import Count, Max
from django.utils import timezone

from communication import audit
from communication.compliance import export, registry, retention
from communication.models import AuditEntry, ErasureRequest

PAST_DUE_LIMIT = 10_000


def compliance_report(now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    last_run = AuditEntry.objects.filter(action=retention.ACTION).order_by("-id").first()
    erasures = ErasureRequest.objects.filter(status=ErasureRequest.Status.DONE).aggregate(
        count=Count("id"), last_at=Max("finished_at")
    )
    exports = AuditEntry.objects.filter(action=export.ACTION).aggregate(
        count=Count("id"), last_at=Max("at")
    )
    return {
        "generated_at": now,
        "retention": {
            kind: _retention_status(kind, days, now, last_run)
            for kind, days in settings.RETENTION_DAYS.items()
        },
        "erasures": erasures,
        "exports": exports,
        "audit": _audit_status(),
    }


def _retention_status(
    kind: str, days: int, now: dt.datetime, last_run: AuditEntry | None
) -> dict[str, Any]:
    cutoff = retention.retention_cutoff(kind, now)
    oldest: dt.datetime | None = None
    past_due = 0
    for entry in registry.entries():
        if entry.retention != kind:
            continue
        rows = entry.model_class._default_manager.order_by(entry.age_field)
        first = rows.values_list(entry.age_field, flat=True).first()
        if first is not None and (oldest is None or first < oldest):
            oldest = first
        if cutoff is not None and past_due <= PAST_DUE_LIMIT:
            past = rows.filter(**{f"{entry.age_field}__lt": cutoff}).values("pk")
            past_due += past[: PAST_DUE_LIMIT + 1 - past_due].count()
    return {
        "days": days,
        "cutoff": cutoff,
        "oldest_at": oldest,
        "oldest_age_days": round((now - oldest).total_seconds() / 86400, 2) if oldest else None,
        "past_due": min(past_due, PAST_DUE_LIMIT),
        "past_due_capped": past_due > PAST_DUE_LIMIT,
        "last_run_at": last_run.at if last_run else None,
        "last_removed": last_run.changes.get(kind) if last_run else None,
    }


def _audit_status() -> dict[str, Any]:
    return dataclasses.asdict(audit.audit_status())
