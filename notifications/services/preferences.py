"""What a user chose: per-category channel preferences, quiet hours, and recorded consent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, TypedDict

from django.db import transaction

from analytics import events
from communication.exceptions import APIError
from communication.models import Category, User
from notifications.models import Consent, NotificationPreference, QuietHours


class PreferenceChange(TypedDict):
    category: str
    channel: str
    enabled: bool


@transaction.atomic
def preferences_set(*, user: User, changes: Sequence[PreferenceChange]) -> None:
    """``changes``: ``[{"category": key, "channel": c, "enabled": bool}]``. Mandatory categories
    cannot be turned off (400)."""
    categories = {
        c.key: c for c in Category.objects.filter(key__in={c["category"] for c in changes})
    }
    errors: dict[str, list[str]] = {}
    for i, change in enumerate(changes):
        category = categories.get(change["category"])
        if category is None:
            errors[f"preferences[{i}].category"] = [f"Unknown category {change['category']!r}."]
        elif category.mandatory and not change["enabled"]:
            errors[f"preferences[{i}].enabled"] = [f"{category.key} is mandatory."]
    if errors:
        raise APIError("Some preferences cannot be set.", code="validation_error", fields=errors)
    for change in changes:
        NotificationPreference.objects.update_or_create(
            user=user,
            category_id=change["category"],
            channel=change["channel"],
            defaults={"enabled": change["enabled"]},
        )


@transaction.atomic
def quiet_hours_set(
    *, user: User, start: dt.time | None, end: dt.time | None, enabled: bool = True
) -> QuietHours | None:
    """Sets the user's quiet hours; no ``start`` or ``end`` removes them (returns None)."""
    if start is None or end is None:
        QuietHours.objects.filter(user=user).delete()
        return None
    quiet, _ = QuietHours.objects.update_or_create(
        user=user, defaults={"start": start, "end": end, "enabled": enabled}
    )
    return quiet


def consent_record(
    *,
    user: User,
    granted: bool,
    source: str,
    channel: str = "",
    category: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> Consent:
    """Records that the user granted or withdrew consent (per channel and category, or for
    all of them when left empty); an unknown category is a 400."""
    if category and not Category.objects.filter(key=category).exists():
        raise APIError(
            "Unknown category.",
            code="validation_error",
            fields={"category": [f"Unknown category {category!r}."]},
        )
    consent = Consent.objects.create(
        user=user,
        channel=channel or "",
        category_id=category or None,
        granted=granted,
        source=source,
        evidence=evidence or {},
    )
    events.record(
        "consent_granted" if granted else "consent_withdrawn",
        channel=channel,
        category=category or "",
        user_id=user.pk,
        data={"source": source},
    )
    return consent
