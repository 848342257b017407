"""Analytics' personal data, declared in the compliance registry."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Q

from communication.compliance.registry import Erase, PersonalData, Subject, register


def _events(subject: Subject) -> Q:
    # Events of deliveries to a bare address carry no user id: notifications declares those
    # (analytics knows no other app).
    return Q(user_id__in=subject.users)


def _expire(cutoff: dt.datetime) -> int:
    # Events go by whole monthly partitions (analytics.partitions), never row by row.
    from analytics import partitions, rollups  # noqa: PLC0415
    from analytics.models import Event  # noqa: PLC0415

    now = cutoff + dt.timedelta(days=settings.RETENTION_DAYS["events"])
    kept_from = rollups.events_kept_from(now)
    if kept_from is None:
        return 0
    removed = Event.objects.filter(occurred_at__lt=kept_from).count()
    partitions.partitions_retire(now=now)
    return removed


register(
    PersonalData(
        name="analytics.events",
        model="analytics.Event",
        rows=_events,
        # Counts stay true; the clicked URL, user agent and provider text go.
        erase=Erase.ANONYMISE,
        fields={"data": {}},
        retention="events",
        age_field="occurred_at",
        expirer=_expire,
        export=("type", "channel", "category", "notification_id", "occurred_at"),
        order=10,
    ),
)
