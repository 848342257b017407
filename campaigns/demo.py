"""A finished demo campaign for ``manage.py seed_demo``: a segment of the demo users, a one-off
campaign created, scheduled, fanned out and delivered through the campaign services in this
process (no worker needed), then dated back a few days. Found again by its name, so a second
run adds nothing."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from analytics.models import Event
from campaigns import services
from campaigns.models import Campaign, Segment
from campaigns.services import fanout, runs
from communication.demo import ORGANIZATION
from notifications import services as notification_services
from notifications.models import Delivery, Notification, NotificationRequest

ACTOR = "staff:seed_demo"
NAME = "Demo: product update"
SEGMENT = "Demo users"


def seed(users: list, out) -> None:
    campaign = Campaign.objects.filter(name=NAME).first()
    if campaign is not None:
        out.write(f"campaigns: '{NAME}' exists ({campaign.status})")
        return
    segment = Segment.objects.filter(name=SEGMENT).first() or services.segment_create(
        actor=ACTOR,
        name=SEGMENT,
        rules={"field": "organization", "op": "eq", "value": ORGANIZATION},
    )
    campaign = services.campaign_create(
        actor=ACTOR,
        name=NAME,
        category="reminders",
        channels=["email", "in_app"],
        segment=segment.id,
        steps=[
            {
                "content": {
                    "subject": "What's new this month",
                    "title": "What's new",
                    "body": "Threads, read receipts and a new inbox.",
                }
            }
        ],
    )
    services.campaign_schedule(campaign=campaign, actor=ACTOR, at=None)
    runs.campaigns_due()
    run = campaign.runs.get()
    step = campaign.steps.get()
    # What the worker's fan_out task chain does, batch after batch, here in this process.
    while (batch := fanout.fanout_batch(run.id, step.id)).outcome == "more":
        pass
    if batch.outcome == "done":
        fanout.fanout_finished(run.id)
    deliveries = Delivery.objects.filter(notification__request__run_id=run.id)
    notification_services.deliveries_attempt(
        list(deliveries.exclude(channel="in_app").values_list("id", flat=True))
    )
    runs.campaigns_due()
    at = timezone.now() - dt.timedelta(days=3)
    ids = list(deliveries.values_list("id", flat=True))
    with transaction.atomic():
        NotificationRequest.objects.filter(run_id=run.id).update(created_at=at)
        Notification.objects.filter(request__run_id=run.id).update(created_at=at)
        Notification.objects.filter(request__run_id=run.id, inbox_at__isnull=False).update(
            inbox_at=at
        )
        for field in ("created_at", "queued_at", "sent_at", "delivered_at"):
            Delivery.objects.filter(id__in=ids, **{f"{field}__isnull": False}).update(**{field: at})
        Event.objects.filter(delivery_id__in=ids).update(occurred_at=at)
    campaign.refresh_from_db()
    out.write(f"campaigns: '{NAME}' sent to {len(users)} users ({campaign.status})")
