"""Reads shared by the API, the admin and the tasks."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db.models import Count, QuerySet

from communication.exceptions import NotFoundError
from communication.models import Category, User
from notifications.models import (
    Consent,
    Notification,
    NotificationPreference,
    NotificationRequest,
    OutboxMessage,
)
from notifications.resolution import SENDABLE


def request_list(
    *,
    caller: str,
    category: str | None = None,
    since: dt.datetime | str | None = None,  # an ISO string from a query parameter works too
    cancelled: bool | None = None,
) -> QuerySet[NotificationRequest]:
    qs = NotificationRequest.objects.filter(caller=caller)
    if category:
        qs = qs.filter(category_id=category)
    if since:
        qs = qs.filter(created_at__gte=since)
    if cancelled is not None:
        qs = qs.filter(cancelled_at__isnull=not cancelled)
    return qs.annotate(recipient_count=Count("notifications")).order_by("-created_at", "-id")


def inbox(
    user: User, *, unread_only: bool = False, category: str | None = None
) -> QuerySet[Notification]:
    qs = Notification.objects.filter(user=user, dismissed_at__isnull=True)
    if unread_only:
        qs = qs.filter(read_at__isnull=True)
    if category:
        qs = qs.filter(category_id=category)
    return qs.order_by("-created_at", "-id")


def categories_with_preferences(user: User) -> list[dict[str, Any]]:
    prefs = {
        (p.category_id, p.channel): p.enabled
        for p in NotificationPreference.objects.filter(user=user)
    }
    out = []
    for category in Category.objects.order_by("position", "key"):
        channels: dict[str, bool] = {}
        for channel in SENDABLE:
            default = channel in category.default_channels
            channels[channel] = (
                True if category.mandatory else prefs.get((category.key, channel), default)
            )
        out.append(
            {
                "key": category.key,
                "name": category.name,
                "description": category.description,
                "mandatory": category.mandatory,
                "requires_consent": category.requires_consent,
                "channels": channels,
            }
        )
    return out


def consent_list(user: User) -> QuerySet[Consent]:
    return Consent.objects.filter(user=user).order_by("-created_at", "-id")


def outbox_list(*, channel: str | None = None, to: str | None = None) -> QuerySet[OutboxMessage]:
    qs = OutboxMessage.objects.all()
    if channel:
        qs = qs.filter(channel=channel)
    if to:
        qs = qs.filter(to=to)
    return qs.order_by("-created_at", "-id")


def notification_get(user: User, notification_id: uuid.UUID | str) -> Notification:
    """One of the user's notifications (not dismissed); 404 for anyone else's."""
    notification = Notification.objects.filter(
        id=notification_id, user=user, dismissed_at__isnull=True
    ).first()
    if notification is None:
        raise NotFoundError("No such notification.")
    return notification
