"""The one builder of a delivery's analytics event: every writer of a delivery's events (send,
outcomes, sweeps, cancels, provider webhooks, unsubscribes) goes through :func:`delivery_event`,
so every event of a delivery carries the same dimensions.

It reads only what the caller loaded with the delivery (its notification and the notification's
request): no query here. A campaign's request carries the campaign, step and run ids.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from notifications.models import Delivery


def delivery_dimensions(delivery: Delivery) -> dict[str, Any]:
    """The columns reports group a delivery's events by. ``template_version`` and ``variant``
    are empty until the worker has rendered the delivery."""
    notification = delivery.notification
    request = notification.request
    return {
        "channel": delivery.channel,
        "category": notification.category_id,
        "caller": request.caller,
        "notification_id": delivery.notification_id,
        "delivery_id": delivery.id,
        "user_id": notification.user_id,
        "template": request.template_key,
        "template_version": delivery.template_version,
        "variant": delivery.variant or "",
        "campaign_id": request.campaign_id,
        "step_id": request.step_id,
        "run_id": request.run_id,
    }


def delivery_event(
    delivery: Delivery,
    type_: str,
    *,
    provider: str = "",
    latency_ms: float | None = None,
    cost: Decimal | None = None,
    queue_wait_ms: float | None = None,
    api_to_provider_ms: float | None = None,
    machine: bool = False,
    occurred_at: dt.datetime | None = None,
    data: dict[str, Any] | None = None,
    **more: Any,
) -> dict[str, Any]:
    """A ``type_`` event of ``delivery``, as the keyword arguments of ``analytics.events``'
    writers (``record``, ``build_many``, ``record_many``); ``data`` and the other keywords go
    in the event's ``data``. Without ``occurred_at`` the event takes the database's clock."""
    event = {
        "type": type_,
        **delivery_dimensions(delivery),
        "provider": provider or "",
        "latency_ms": latency_ms,
        "cost": cost,
        "queue_wait_ms": queue_wait_ms,
        "api_to_provider_ms": api_to_provider_ms,
        "machine": machine,
        "data": {**(data or {}), **more},
    }
    if occurred_at is not None:
        event["occurred_at"] = occurred_at
    return event
