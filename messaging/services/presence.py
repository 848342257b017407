"""The persisted side of presence (last seen) and the sweep of sockets whose process died."""

from __future__ import annotations

import datetime as dt
import uuid

from django.db import connection, transaction
from django.utils import timezone

from communication import realtime
from communication.models import User
from messaging import presence, selectors
from messaging.services.payloads import presence_event


def presence_seen(user_pk: uuid.UUID | str, when: dt.datetime | None = None) -> dt.datetime:
    """Persists when the user was last seen online."""
    when = when or timezone.now()
    with connection.cursor() as cursor:  # every socket's connect and close: one statement
        cursor.execute(
            "INSERT INTO messaging_userpresence (user_id, last_seen_at) VALUES (%s, %s) "
            "ON CONFLICT (user_id) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at",
            [user_pk, when],
        )
    return when


def presence_sweep() -> int:
    """Turns offline the users whose sockets' heartbeats all lapsed (their ASGI process died):
    persists their last seen and tells their contacts."""
    count = 0
    for user_pk, last in presence.lapsed():
        when = dt.datetime.fromtimestamp(last, tz=dt.UTC)
        user = User.objects.filter(pk=user_pk).first()
        if user is None:
            continue
        with transaction.atomic():
            presence_seen(user_pk, when)
            event = presence_event(user, "offline", when)
            for pk in selectors.contacts_of(user_pk):
                realtime.publish(pk, event)
        count += 1
    return count
