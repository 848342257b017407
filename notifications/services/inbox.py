"""The user's inbox: new items announced, read, unread, dismissed; each change told to the user's
other sockets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from communication import realtime
from communication.audit import audit_record
from communication.models import User
from notifications import selectors
from notifications.escalation import READ_IN_INBOX
from notifications.models import Notification
from notifications.services.cancellation import escalations_stop


def notifications_publish_created(notifications: Sequence[Notification]) -> None:
    """Tells each user's sockets of their new inbox items (after commit, through ``realtime``),
    with the unread count they make: one count query and one statement for a whole send."""
    if not notifications:
        return
    counts = dict(
        selectors.inbox_unread({n.user_id for n in notifications if n.user_id is not None})
        .values("user_id")
        .annotate(n=Count("id"))
        .values_list("user_id", "n")
    )
    # A user's sequence gives one event per statement: several items for one user (a sweep's
    # batch) go out in rounds.
    rounds: list[dict[uuid.UUID, dict[str, Any]]] = []
    seen: dict[uuid.UUID, int] = {}
    for notification in notifications:
        # Only a user's notifications are announced (an address-only one has no inbox).
        assert notification.user_id is not None, "an inbox item without a user"
        i = seen[notification.user_id] = seen.get(notification.user_id, -1) + 1
        if i == len(rounds):
            rounds.append({})
        rounds[i][notification.user_id] = {
            "id": str(notification.id),
            "title": notification.title,
            "body": notification.body,
            "category": notification.category_id,
            "action_url": notification.action_url or None,
            "created_at": (notification.created_at or timezone.now()).isoformat(),
            "unread": counts.get(notification.user_id, 0),
        }
    for data_by_user in rounds:
        realtime.publish_events("notification.created", data_by_user)


@transaction.atomic
def notification_mark(*, user: User, notification_id: uuid.UUID | str, read: bool) -> Notification:
    """Marks one notification read (or unread again) and tells the user's other sockets; a read
    cancels its escalation steps still pending."""
    notification = selectors.notification_get(user, notification_id)
    value = timezone.now() if read else None
    if (notification.read_at is None) == read:
        notification.read_at = value
        notification.save(update_fields=["read_at"])
        if read:
            escalations_stop([notification.id], reason=READ_IN_INBOX)
        realtime.publish_event(
            user.pk,
            "notification.read" if read else "notification.unread",
            {
                "ids": [str(notification.id)],
                "unread": unread_count(user),
            },
        )
    return notification


@transaction.atomic
def notification_read_all(*, user: User) -> int:
    """Marks every unread notification of the user read (cancelling their escalation steps
    still pending); returns how many."""
    now = timezone.now()
    ids = list(selectors.inbox_unread(user).values_list("id", flat=True))
    if ids:
        Notification.objects.filter(id__in=ids).update(read_at=now)
        escalations_stop(ids, reason=READ_IN_INBOX)
        realtime.publish_event(
            user.pk,
            "notification.read",
            {"ids": [str(i) for i in ids[:1000]], "all": True, "unread": 0},
        )
    return len(ids)


@transaction.atomic
def notification_dismiss(*, user: User, notification_id: uuid.UUID | str) -> None:
    """Hides one notification from the inbox (read, if it was not: its escalation steps still
    pending are cancelled)."""
    notification = selectors.notification_get(user, notification_id)
    notification.dismissed_at = timezone.now()
    if notification.read_at is None:
        notification.read_at = notification.dismissed_at
        escalations_stop([notification.id], reason=READ_IN_INBOX)
    notification.save(update_fields=["dismissed_at", "read_at"])
    audit_record("notification.dismiss", "notifications.notification", notification.pk)
    realtime.publish_event(
        user.pk,
        "notification.dismissed",
        {"ids": [str(notification.id)], "unread": unread_count(user)},
    )


def unread_count(user: User | uuid.UUID) -> int:
    """The user's unread inbox items (``user``: a User or its primary key)."""
    return selectors.inbox_unread(user).count()
