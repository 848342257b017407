"""What a user chose: per-category channel preferences, quiet hours, and recorded consent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, TypedDict

from django.db import transaction

from analytics import events
from communication.audit import audit_record, field_changes
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
    if changes:
        audit_record(
            "preference.update",
            "communication.user",
            user.pk,
            changes={
                f"{c['category']}.{c['channel']}": "enabled" if c["enabled"] else "disabled"
                for c in changes
            },
        )


@transaction.atomic
def quiet_hours_set(
    *, user: User, start: dt.time | None, end: dt.time | None, enabled: bool = True
) -> QuietHours | None:
    """Sets the user's quiet hours; no ``start`` or ``end`` removes them (returns None)."""
    existing = QuietHours.objects.filter(user=user).first()
    before = (
        {"start": existing.start, "end": existing.end, "enabled": existing.enabled}
        if existing
        else {}
    )
    if start is None or end is None:
        QuietHours.objects.filter(user=user).delete()
        _quiet_audit(user, before, {})
        return None
    after = {"start": start, "end": end, "enabled": enabled}
    quiet, _ = QuietHours.objects.update_or_create(user=user, defaults=after)
    _quiet_audit(user, before, after)
    return quiet


def _quiet_audit(user: User, before: dict[str, Any], after: dict[str, Any]) -> None:
    changes = field_changes(before, after)
    if changes:
        audit_record("quiet_hours.update", "communication.user", user.pk, changes=changes)


@transaction.atomic
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
    # The evidence (an IP, a user agent, a form's text) stays out of the trail: by name only.
    audit_record(
        "consent.grant" if granted else "consent.withdraw",
        "notifications.consent",
        consent.pk,
        changes={
            "user": str(user.pk),
            "channel": channel or "*",
            "category": category or "*",
            "source": source,
            **({"evidence": "changed"} if evidence else {}),
        },
    )
    events.record(
        "consent_granted" if granted else "consent_withdrawn",
        channel=channel,
        category=category or "",
        user_id=user.pk,
        data={"source": source},
    )
    return consent
