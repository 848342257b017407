"""Reads shared by the API, the admin and the tasks."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from django.db.models import Count, Q, QuerySet

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


# What "in the inbox" means, for every read of it (lists, counts, read-all, the websocket): the
# in-app delivery was delivered (``inbox_at``: never for an email-only send, not yet for a
# scheduled one, never for a cancelled one) and the user has not dismissed it.
IN_INBOX = Q(inbox_at__isnull=False, dismissed_at__isnull=True)
UNREAD = Q(IN_INBOX, read_at__isnull=True)
# Newest arrival first: a scheduled item comes in at the top when its time comes.
INBOX_ORDER = ("-inbox_at", "-id")


def inbox_unread(users: User | uuid.UUID | Iterable[uuid.UUID]) -> QuerySet[Notification]:
    """Unread inbox items of one user (a User or its primary key) or of several (their keys)."""
    if isinstance(users, User | uuid.UUID):
        return Notification.objects.filter(UNREAD, user=users)
    return Notification.objects.filter(UNREAD, user_id__in=users)


def inbox(
    user: User, *, unread_only: bool = False, category: str | None = None
) -> QuerySet[Notification]:
    """The user's inbox, newest arrival first."""
    qs = Notification.objects.filter(UNREAD if unread_only else IN_INBOX, user=user)
    if category:
        qs = qs.filter(category_id=category)
    return qs.order_by(*INBOX_ORDER)


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
    """One of the user's inbox items; 404 for anyone else's, and for one not (or no longer) in
    the inbox."""
    notification = Notification.objects.filter(IN_INBOX, id=notification_id, user=user).first()
    if notification is None:
        raise NotFoundError("No such notification.")
    return notification
