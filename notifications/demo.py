"""Demo sends for ``manage.py seed_demo``: two weeks of email, SMS and in-app notifications to
the demo users, delivered inline to the development outbox through the real pipeline, then moved
back in time so the dashboard and the analytics reports have a history.

Each send carries an idempotency key; a send whose request exists already is skipped, so a second
run adds nothing (the keys' own replay window is not relied on: it is pruned).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from analytics.models import Event
from notifications import services
from notifications.models import Delivery, Notification, NotificationRequest

CALLER = "demo-seed"
DAYS = 14

# (category, channels, title, body): one email, SMS or in-app send per slot.
SENDS = [
    ("alerts", ["email"], "Disk almost full", "Volume /data is 90 % full."),
    ("reminders", ["in_app"], "Review due", "The quarterly review is due on Friday."),
    ("security", ["sms"], "New sign-in", "A new device signed in to your account."),
    ("activity", ["in_app"], "New comment", "Someone commented on your draft."),
]


def _send(key: str, payload: dict[str, Any], at: dt.datetime) -> bool:
    """Sends once per ``key``, delivers the email and SMS deliveries inline, then dates
    everything at ``at``; False when the send exists already."""
    if NotificationRequest.objects.filter(caller=CALLER, idempotency_key=key).exists():
        return False
    outcome = services.notification_send(caller=CALLER, payload=payload, idempotency_key=key)
    notifications = outcome.body["notifications"]
    deliveries = [d for n in notifications for d in n["deliveries"]]
    services.deliveries_attempt([d["id"] for d in deliveries if d["channel"] != "in_app"])
    ids = [d["id"] for d in deliveries]
    with transaction.atomic():
        NotificationRequest.objects.filter(id=outcome.body["request_id"]).update(created_at=at)
        Notification.objects.filter(id__in=[n["id"] for n in notifications]).update(created_at=at)
        Notification.objects.filter(
            id__in=[n["id"] for n in notifications], inbox_at__isnull=False
        ).update(inbox_at=at)
        Delivery.objects.filter(id__in=ids).update(created_at=at)
        for field in ("queued_at", "sending_at", "sent_at", "delivered_at", "failed_at"):
            Delivery.objects.filter(id__in=ids, **{f"{field}__isnull": False}).update(
                **{field: at + dt.timedelta(seconds=2)}
            )
        Event.objects.filter(delivery_id__in=ids).update(occurred_at=at + dt.timedelta(seconds=2))
    return True


def seed(users: list, out) -> None:
    """Two weeks of sends to ``users`` (the demo users), and an inbox with read and unread items
    for each."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    created = 0
    for day in range(DAYS):
        for slot, (category, channels, title, body) in enumerate(SENDS):
            recipients = [
                {"user_id": users[(day + slot + i) % len(users)].external_id}
                for i in range(1 + (day + slot) % 3)
            ]
            if "in_app" in channels and day == 0:
                recipients = [{"user_id": u.external_id} for u in users]
            at = now - dt.timedelta(days=day, hours=3 * slot + 1)
            payload = {
                "recipients": recipients,
                "category": category,
                "channels": channels,
                "content": {"subject": title, "title": title, "body": body},
                "data": {"demo": True},
            }
            created += _send(f"demo-{day}-{slot}", payload, at)
    # The older half of each inbox read; the last days' items stay unread.
    read = 0
    for user in users:
        for notification in Notification.objects.filter(
            user=user, inbox_at__lt=now - dt.timedelta(days=DAYS // 2), read_at__isnull=True
        ):
            services.notification_mark(user=user, notification_id=notification.id, read=True)
            read += 1
    out.write(f"notifications: {created} sends made ({DAYS} days), {read} inbox items marked read")
