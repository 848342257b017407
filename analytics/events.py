"""``record(...)``: the one way other apps write analytics events.

Called inside the transaction (or the statement) that changes a delivery's state, so the event
exists exactly when the change does. Analytics imports no other domain app; it writes through the
core's ``communication.rows``.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db.models import Model

from analytics.models import Event
from communication import rows


def record(
    type: str,  # the event's name in every report (shadows the builtin on purpose)
    *,
    channel: str = "",
    provider: str = "",
    category: str = "",
    caller: str = "",
    notification_id: uuid.UUID | str | None = None,
    delivery_id: uuid.UUID | str | None = None,
    latency_ms: float | None = None,
    cost: Decimal | float | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    return Event.objects.create(
        type=type,
        channel=channel,
        provider=provider or "",
        category=category,
        caller=caller,
        notification_id=notification_id,
        delivery_id=delivery_id,
        latency_ms=latency_ms,
        cost=cost,
        data=data or {},
    )


def build_many(events: list[dict[str, Any]]) -> list[Event]:
    """Unsaved events, for a caller that writes them in the same statement as its own rows
    (``communication.rows.insert_all``)."""
    return [Event(**e) for e in events]


def record_many(events: list[dict[str, Any]]) -> None:
    """Writes many events in one statement (fan-out paths)."""
    batch: list[Model] = list(build_many(events))
    rows.insert_all([batch])
