"""``record(...)``: the one way other apps write analytics events.

Called inside the transaction (or the statement) that changes a delivery's state, so the event
exists exactly when the change does. Analytics imports no other domain app; it writes through the
core's ``communication.rows``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from django.db.models import Model

from analytics.models import Event
from communication import rows

# What an engagement event (an open, a click) copies from its delivery's ``sent`` event: the
# columns reports group a delivery's events by.
DELIVERY_DIMENSIONS = (
    "channel",
    "provider",
    "category",
    "caller",
    "notification_id",
    "delivery_id",
    "user_id",
    "template",
    "template_version",
    "variant",
    "campaign_id",
    "step_id",
    "run_id",
)


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
    occurred_at: dt.datetime | None = None,
    user_id: uuid.UUID | str | None = None,
    template: str = "",
    template_version: uuid.UUID | str | None = None,
    variant: str = "",
    campaign_id: uuid.UUID | str | None = None,
    step_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    machine: bool = False,
    queue_wait_ms: float | None = None,
    api_to_provider_ms: float | None = None,
) -> Event:
    """Writes one event. ``occurred_at`` defaults to the database's clock (the statement's
    ``now()``); a provider's own time of the event is passed here."""
    extra: dict[str, Any] = {} if occurred_at is None else {"occurred_at": occurred_at}
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
        user_id=user_id,
        template=template or "",
        template_version=template_version,
        variant=variant or "",
        campaign_id=campaign_id,
        step_id=step_id,
        run_id=run_id,
        machine=machine,
        queue_wait_ms=queue_wait_ms,
        api_to_provider_ms=api_to_provider_ms,
        **extra,
    )


def build_many(events: list[dict[str, Any]]) -> list[Event]:
    """Unsaved events, for a caller that writes them in the same statement as its own rows
    (``communication.rows.insert_all``)."""
    return [Event(**e) for e in events]


def record_many(events: list[dict[str, Any]]) -> None:
    """Writes many events in one statement (fan-out paths)."""
    batch: list[Model] = list(build_many(events))
    rows.insert_all([batch])
