"""Who gets what on which channel: the resolution rules of a send, as pure decisions.

Given a recipient (a user or a raw address), a category, the channels and the time, each
(recipient, channel) pair becomes a :class:`Decision`: queued, scheduled (with when), held for a
digest (with when it goes out), skipped or suppressed (with why). ``notifications.services``
loads what the rules need in a few bulk queries and writes the rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from communication.models import Category, User

SENDABLE = ("email", "sms", "push", "in_app")
DIGEST_MODES = ("hourly", "daily", "weekly")


@dataclass(frozen=True)
class Mode:
    """How often a user hears about a category on a channel, and when their digest goes out
    (local wall-clock time; ``weekday`` 0 is Monday)."""

    mode: str = "immediate"
    time: dt.time = dt.time(8, 0)
    weekday: int = 0


@dataclass
class Recipient:
    """One entry of ``recipients``: a user, or a raw email / phone for a non-user."""

    spec: dict[str, Any]
    user: User | None = None
    email: str = ""
    phone: str = ""
    # The recipient's own variables, merged over the request's (bulk sends, campaigns).
    data: dict[str, Any] = field(default_factory=dict)
    # When set, the time its deliveries are due, overriding the request's schedule (a campaign's
    # local time or send window, computed by the campaign).
    scheduled_for: dt.datetime | None = None

    @property
    def key(self) -> str:
        if self.user is not None:
            return self.user.external_id or ""
        return self.email or self.phone


@dataclass
class Decision:
    channel: str
    status: str  # queued | scheduled | held | skipped | suppressed | delivered (in-app, at once)
    address: str = ""
    reason: str = ""
    scheduled_for: dt.datetime | None = None


@dataclass
class Facts:
    """What the rules consult, loaded in bulk for every recipient of a request."""

    category: Category
    # (user_pk, channel) -> enabled
    preferences: dict[tuple[uuid.UUID, str], bool] = field(default_factory=dict)
    # (user_pk, channel) -> (mode, digest time or None, weekday or None): the user's own choice
    # (None: the category's), loaded with ``preferences``
    modes: dict[tuple[uuid.UUID, str], tuple[str, dt.time | None, int | None]] = field(
        default_factory=dict
    )
    # A digest being released: it is the held items going out, never held again itself.
    release: bool = False
    # user_pk -> list of (channel or "", category key or "", granted), newest first
    consents: dict[uuid.UUID, list[tuple[str, str, bool]]] = field(default_factory=dict)
    # (channel, address) -> reason
    suppressed: dict[tuple[str, str], str] = field(default_factory=dict)
    # user_pk -> (start, end) local times
    quiet: dict[uuid.UUID, tuple[dt.time, dt.time]] = field(default_factory=dict)
    # user_pk -> number of active push devices (the Push issue fills it)
    devices: dict[uuid.UUID, int] = field(default_factory=dict)


def channels_for(recipient: Recipient, requested: str | Sequence[str], facts: Facts) -> list[str]:
    """``auto``: the category's default channels the recipient can be reached on (and has not
    turned off); explicit: as asked."""
    if requested != "auto":
        return list(requested)
    defaults = [c for c in facts.category.default_channels if c in SENDABLE]
    if recipient.user is None:
        return ["email"] if recipient.email else ["sms"]
    return [
        c for c in defaults if enabled_for(recipient.user.pk, c, facts) or facts.category.mandatory
    ]


def enabled_for(user_pk: uuid.UUID, channel: str, facts: Facts) -> bool:
    """Whether the user hears about the category on ``channel`` at all: their own choice, else
    on unless the category starts everyone "off" there."""
    default = (facts.category.digest_modes or {}).get(channel) != "off"
    return facts.preferences.get((user_pk, channel), default)


def address_for(recipient: Recipient, channel: str) -> str:
    if channel == "email":
        return (recipient.email or (recipient.user.email if recipient.user else "")).lower()
    if channel == "sms":
        return recipient.phone or (recipient.user.phone if recipient.user else "")
    if channel in ("in_app", "push"):
        return (recipient.user.external_id or "") if recipient.user is not None else ""
    return ""


def _has_consent(user_pk: uuid.UUID, channel: str, category_key: str, facts: Facts) -> bool:
    for consent_channel, consent_category, granted in facts.consents.get(user_pk, []):
        if consent_channel in ("", channel) and consent_category in ("", category_key):
            return granted
    return False


def quiet_window_end(
    now: dt.datetime, start: dt.time, end: dt.time, tz_name: str
) -> dt.datetime | None:
    """The end of the quiet window ``now`` falls in (an aware UTC datetime), or None."""
    tz = _zone(tz_name)
    local = now.astimezone(tz)
    t = local.time()
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:  # the window crosses midnight, e.g. 22:00 → 07:00
        inside = t >= start or t < end
        end_day = local.date() + dt.timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    naive = dt.datetime.combine(end_day, end)
    return naive.replace(tzinfo=tz).astimezone(dt.UTC)


def _zone(tz_name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(tz_name) if tz_name else dt.UTC
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def mode_for(user_pk: uuid.UUID, channel: str, facts: Facts) -> Mode:
    """The user's mode for the category on ``channel``: their own, else the category's default.
    In-app is always immediate: its inbox item is the message, there is nothing to gather."""
    category = facts.category
    if channel == "in_app":
        return Mode()
    own = facts.modes.get((user_pk, channel))
    default_mode = (category.digest_modes or {}).get(channel, "immediate")
    if own is None:
        return Mode(default_mode, category.digest_time, category.digest_weekday)
    mode, time, weekday = own
    return Mode(
        mode,
        time if time is not None else category.digest_time,
        weekday if weekday is not None else category.digest_weekday,
    )


def next_digest_at(after: dt.datetime, mode: Mode, tz_name: str) -> dt.datetime:
    """When the digest of ``mode`` next goes out strictly after ``after`` (aware, UTC).

    Hourly: every real hour at the minute of ``mode.time`` in the user's zone (counted in UTC,
    so a day that gains or loses an hour has 25 or 23 of them). Daily and weekly: at
    ``mode.time`` on the user's wall clock; a time the clocks skip (spring forward) goes out at
    the same distance past the jump, a time that happens twice (fall back) at its first.
    """
    tz = _zone(tz_name)
    local = after.astimezone(tz)
    if mode.mode == "hourly":
        slot = local.replace(minute=mode.time.minute, second=0, microsecond=0).astimezone(dt.UTC)
        while slot <= after:
            slot += dt.timedelta(hours=1)
        return slot
    for days in range(8 + 1):
        day = local.date() + dt.timedelta(days=days)
        if mode.mode == "weekly" and day.weekday() != mode.weekday:
            continue
        slot = dt.datetime.combine(day, mode.time, tzinfo=tz).astimezone(dt.UTC)
        if slot > after:
            return slot
    raise AssertionError("a daily or weekly slot exists within eight days")


def decide(
    recipient: Recipient,
    channel: str,
    *,
    facts: Facts,
    priority: str,
    now: dt.datetime,
    scheduled_for: dt.datetime | None,
) -> Decision:
    """The rules, in order: reachability, opt-out, consent, suppression, digest, quiet hours,
    schedule.

    A non-urgent send of a category that is not mandatory, to a user on email, SMS or push, is
    held (status ``held``) until the user's digest when their mode is hourly, daily or weekly, or
    until their quiet hours end when it would arrive inside them; the release sends the held
    items as one digest. In-app never waits: the inbox item is the message.
    """
    category = facts.category
    user = recipient.user
    if channel not in SENDABLE:
        return Decision(channel, "skipped", reason=f"unknown channel {channel!r}")
    if channel in ("in_app", "push") and user is None:
        return Decision(channel, "skipped", reason=f"{channel} needs a user recipient")
    address = address_for(recipient, channel)
    if channel == "push" and user is not None and not facts.devices.get(user.pk):
        return Decision(channel, "skipped", address=address, reason="no push device registered")
    if not address:
        what = {"email": "email address", "sms": "phone number"}.get(channel, "address")
        return Decision(channel, "skipped", reason=f"recipient has no {what}")
    # A digest's items passed this when they were held (and a change since moved them).
    if user is not None and not category.mandatory and not facts.release:
        if not enabled_for(user.pk, channel, facts):
            return Decision(
                channel,
                "skipped",
                address=address,
                reason=f"opted out of {category.key} on {channel}",
            )
    if category.requires_consent and (
        user is None or not _has_consent(user.pk, channel, category.key, facts)
    ):
        return Decision(
            channel,
            "skipped",
            address=address,
            reason=f"no consent for {category.key} on {channel}",
        )
    suppressed = facts.suppressed.get((channel, address))
    if suppressed:
        return Decision(channel, "suppressed", address=address, reason=suppressed)

    when = scheduled_for if scheduled_for and scheduled_for > now else None
    if (
        user is not None
        and channel != "in_app"
        and priority != "urgent"
        and not category.mandatory
        and not facts.release
    ):
        mode = mode_for(user.pk, channel, facts)
        held_until, reason = None, ""
        if mode.mode in DIGEST_MODES:
            held_until = next_digest_at(when or now, mode, user.timezone)
            reason = f"{mode.mode} digest"
        window = facts.quiet.get(user.pk)
        if window:
            # A digest due inside the quiet hours waits for their end too.
            end = quiet_window_end(held_until or when or now, window[0], window[1], user.timezone)
            if end is not None:
                held_until, reason = end, reason or "quiet hours"
        if held_until is not None:
            return Decision(
                channel, "held", address=address, scheduled_for=held_until, reason=reason
            )
    if when is not None:
        return Decision(channel, "scheduled", address=address, scheduled_for=when)
    if channel == "in_app":
        return Decision(channel, "delivered", address=address)
    return Decision(channel, "queued", address=address)


def local_to_utc(naive: dt.datetime, tz_name: str) -> dt.datetime:
    """``scheduled_local``: the wall-clock time in the recipient's zone."""
    tz = _zone(tz_name)
    return naive.replace(tzinfo=tz).astimezone(dt.UTC)
