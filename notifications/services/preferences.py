"""What a user chose: per-category channel preferences and delivery modes (immediate, a
digest, off), quiet hours, and recorded consent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from django.db import transaction
from django.utils import timezone

from analytics import events
from communication.audit import audit_record, field_changes
from communication.exceptions import APIError
from communication.models import Category, User
from notifications import resolution
from notifications.models import (
    Consent,
    Delivery,
    DeliveryMode,
    NotificationPreference,
    QuietHours,
)
from notifications.services import digests


class PreferenceChange(TypedDict, total=False):
    """One change; ``category`` and ``channel`` always, then ``enabled`` and/or ``mode`` (with
    ``digest_time`` "HH:MM" and ``digest_weekday`` 0 Monday … 6 Sunday, null: the category's)."""

    category: str
    channel: str
    enabled: bool
    mode: str
    digest_time: Any
    digest_weekday: Any


_MODES = tuple(DeliveryMode.values)


def _parse_time(value: Any) -> dt.time | None:
    if value is None or isinstance(value, dt.time):
        return value
    if not isinstance(value, str) or len(value) > 8:
        raise ValueError
    parsed = dt.time.fromisoformat(value)
    return parsed.replace(second=0, microsecond=0)


def _parse_weekday(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 6:
        raise ValueError
    return int(value)


@dataclass
class _Resolved:
    category: Category
    channel: str
    enabled: bool
    mode: str
    digest_time: dt.time | None
    digest_weekday: int | None
    fields: set[str]


@transaction.atomic
def preferences_set(*, user: User, changes: Sequence[PreferenceChange]) -> None:
    """``changes``: ``[{"category", "channel", "enabled"?, "mode"?, "digest_time"?,
    "digest_weekday"?}]``. ``enabled`` alone keeps a digest mode (false: ``off``); ``mode``
    alone sets ``enabled`` (``off`` is disabled). Refused (400, code per problem, every field
    named): an unknown category (``unknown_category``), a mode that is not one of immediate,
    hourly, daily, weekly, off (``invalid_mode``), ``enabled`` contradicting ``mode``
    (``inconsistent_mode``), a digest on in-app or any mode but immediate on a mandatory
    category (``mode_not_allowed``), a time that is not HH:MM (``invalid_digest_time``), a
    weekday outside 0-6 (``invalid_digest_weekday``).

    Held deliveries follow the change: turned off, they are cancelled; another mode, they go
    out at its next digest (immediate: at the next release, within a minute).
    """
    categories = {
        c.key: c for c in Category.objects.filter(key__in={c["category"] for c in changes})
    }
    existing = {
        (p.category_id, p.channel): p
        for p in NotificationPreference.objects.filter(user=user, category_id__in=list(categories))
    }
    errors: dict[str, list[str]] = {}
    codes: list[str] = []

    def refuse(path: str, code: str, message: str) -> None:
        errors.setdefault(path, []).append(message)
        codes.append(code)

    resolved: list[_Resolved] = []
    for i, change in enumerate(changes):
        category = categories.get(change["category"])
        if category is None:
            refuse(
                f"preferences[{i}].category",
                "unknown_category",
                f"Unknown category {change['category']!r}.",
            )
            continue
        before = existing.get((category.key, change["channel"]))
        one = _resolve(f"preferences[{i}]", change, category, before, refuse)
        if one is not None:
            resolved.append(one)
    if errors:
        code = codes[0] if len(set(codes)) == 1 else "validation_error"
        raise APIError("Some preferences cannot be set.", code=code, fields=errors)
    now = timezone.now()
    for r in resolved:
        NotificationPreference.objects.update_or_create(
            user=user,
            category_id=r.category.key,
            channel=r.channel,
            defaults={
                "enabled": r.enabled,
                "mode": r.mode,
                "digest_time": r.digest_time,
                "digest_weekday": r.digest_weekday,
            },
        )
        _held_follow(user, r, now)
    if resolved:
        audit_record(
            "preference.update",
            "communication.user",
            user.pk,
            changes={
                f"{r.category.key}.{r.channel}": _audit_value(r, changes[i])
                for i, r in enumerate(resolved)
            },
        )


def _resolve(
    at: str,
    change: PreferenceChange,
    category: Category,
    before: NotificationPreference | None,
    refuse: Callable[[str, str, str], None],
) -> _Resolved | None:
    """One change checked and completed (mode, enabled, time, weekday), or None once refused."""
    channel = change["channel"]
    mode = change.get("mode")
    if mode is not None and mode not in _MODES:
        refuse(f"{at}.mode", "invalid_mode", f"mode must be one of {', '.join(_MODES)}.")
        return None
    try:
        time = _parse_time(change.get("digest_time"))
    except (TypeError, ValueError):
        refuse(f"{at}.digest_time", "invalid_digest_time", "digest_time must be HH:MM.")
        return None
    try:
        weekday = _parse_weekday(change.get("digest_weekday"))
    except (TypeError, ValueError):
        refuse(
            f"{at}.digest_weekday",
            "invalid_digest_weekday",
            "digest_weekday must be 0 (Monday) to 6 (Sunday).",
        )
        return None
    enabled = change.get("enabled")
    if mode is None:
        if enabled is None:
            refuse(at, "invalid_mode", "Give enabled or mode.")
            return None
        if not enabled:
            mode = "off"
        elif before is not None and before.mode != "off":
            mode = before.mode
        else:
            default = (category.digest_modes or {}).get(channel, "immediate")
            mode = "immediate" if default == "off" else default
    elif enabled is not None and enabled != (mode != "off"):
        refuse(f"{at}.enabled", "inconsistent_mode", f"enabled contradicts mode {mode!r}.")
        return None
    if category.mandatory and mode != "immediate":
        what = "turned off" if mode == "off" else "gathered in a digest"
        refuse(
            f"{at}.enabled" if mode == "off" else f"{at}.mode",
            "mode_not_allowed",
            f"{category.key} is mandatory: it cannot be {what}.",
        )
        return None
    if channel == "in_app" and mode in resolution.DIGEST_MODES:
        refuse(f"{at}.mode", "mode_not_allowed", "in_app is always immediate or off.")
        return None
    given = {k for k in ("digest_time", "digest_weekday") if k in change}
    return _Resolved(
        category,
        channel,
        mode != "off",
        mode,
        time if "digest_time" in given else (before.digest_time if before else None),
        weekday if "digest_weekday" in given else (before.digest_weekday if before else None),
        given,
    )


def _audit_value(r: _Resolved, change: PreferenceChange) -> str:
    # Today's trail says enabled/disabled; a mode change says the mode (and its time).
    if "mode" not in change and not r.fields:
        return "enabled" if r.enabled else "disabled"
    if r.mode in resolution.DIGEST_MODES:
        at = f" at {r.digest_time:%H:%M}" if r.digest_time else ""
        day = f" on day {r.digest_weekday}" if r.digest_weekday is not None else ""
        return f"{r.mode}{at}{day}"
    return r.mode


def _held_follow(user: User, r: _Resolved, now: dt.datetime) -> None:
    """The user's held deliveries of this category and channel follow the new mode."""
    held = Delivery.objects.filter(
        status="held",
        channel=r.channel,
        notification__user=user,
        notification__category_id=r.category.key,
    )
    if r.mode == "off":
        digests.held_opted_out_cancel(list(held.values_list("id", flat=True)))
        return
    # Held for quiet hours, they wait for the window's end whatever the mode.
    held = held.exclude(reason="quiet hours")
    if r.mode in resolution.DIGEST_MODES:
        mode = resolution.Mode(
            r.mode,
            r.digest_time or r.category.digest_time,
            r.digest_weekday if r.digest_weekday is not None else r.category.digest_weekday,
        )
        at = resolution.next_digest_at(now, mode, user.timezone)
        held.update(scheduled_for=at, reason=f"{r.mode} digest", updated_at=now)
    else:
        held.update(scheduled_for=now, updated_at=now)


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
