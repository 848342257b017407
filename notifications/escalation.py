"""A send's escalation: the channels tried one after the other until the notification is read.

``[{"channel": "in_app"}, {"channel": "push", "after": "10m"}, {"channel": "email", "after":
"1h"}]``: the first step goes at once, each later one is a delivery scheduled ``after`` the
send (``notifications.services.send.recipients_write``), and a read of the notification on any
channel cancels the steps still pending (``notifications.services.cancellation``).

This module only parses and checks a body's steps; it writes nothing.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_duration

from communication.exceptions import APIError
from notifications.models import Channel

# "30s", "10m", "1h", "2d": the short form; anything else is tried as ISO 8601 ("PT10M").
_SHORT = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# A cancelled step names the read that stopped it (Delivery.reason).
READ_IN_INBOX = "read in inbox"
EMAIL_OPENED = "email opened"
EMAIL_CLICKED = "email clicked"
PUSH_OPENED = "push opened"


def _invalid(message: str, field: str = "escalation") -> APIError:
    return APIError(message, code="invalid_escalation", fields={field: [message]})


def after_seconds(value: Any, field: str) -> int:
    """``after`` as whole seconds: ``30s|10m|1h|2d``, an ISO 8601 duration (``PT10M``) or a
    number of seconds. Raises ``APIError`` (``invalid_escalation``) for anything else."""
    if isinstance(value, bool):
        raise _invalid("after must be a duration such as 30s, 10m, 1h, 2d or PT10M.", field)
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and len(value) <= 64 and "\x00" not in value:
        text = value.strip().lower()
        short = _SHORT.match(text)
        if short:
            seconds = int(short.group(1)) * _UNIT[short.group(2)]
        else:
            # parse_duration also reads "HH:MM:SS"; only the ISO form is documented.
            parsed = parse_duration(value.strip()) if text.startswith(("p", "-p")) else None
            if parsed is None:
                raise _invalid("after must be a duration such as 30s, 10m, 1h, 2d or PT10M.", field)
            seconds = int(parsed.total_seconds())
            if parsed.total_seconds() != seconds:
                raise _invalid("after is counted in whole seconds.", field)
    else:
        raise _invalid("after must be a duration such as 30s, 10m, 1h, 2d or PT10M.", field)
    if seconds < 0:
        raise _invalid("after cannot be negative.", field)
    return seconds


def escalation_clean(steps: Any) -> list[dict[str, Any]]:
    """A body's ``escalation`` as stored on the request: ``[{"channel", "after"}]`` with
    ``after`` in seconds. The first step goes at once; each channel appears once (a delivery
    is unique per notification and channel); each ``after`` is later than the one before and
    within ``NOTIFICATIONS_ESCALATION_MAX_SECONDS``."""
    if not isinstance(steps, list):
        raise _invalid("escalation must be a list of steps.")
    if not 1 <= len(steps) <= len(Channel.values):
        raise _invalid(f"escalation needs 1 to {len(Channel.values)} steps.")
    cleaned: list[dict[str, Any]] = []
    seen: set[str] = set()
    limit = settings.NOTIFICATIONS_ESCALATION_MAX_SECONDS
    for i, step in enumerate(steps):
        where = f"escalation[{i}]"
        if not isinstance(step, dict) or set(step) - {"channel", "after"}:
            raise _invalid('Each step is {"channel": …, "after": …}.', where)
        channel = step.get("channel")
        if channel not in Channel.values:
            raise _invalid(f"channel must be one of {', '.join(Channel.values)}.", where)
        if channel in seen:
            raise _invalid(f"{channel} appears twice: each channel is one step.", where)
        seen.add(channel)
        after = after_seconds(step.get("after", 0), f"{where}.after")
        if i == 0 and after:
            raise _invalid("The first step goes at once: it takes no after.", where)
        if i > 0 and after <= cleaned[-1]["after"]:
            raise _invalid("Each step's after must be later than the step before.", where)
        if after > limit:
            raise _invalid(f"after is at most {limit} seconds.", where)
        cleaned.append({"channel": channel, "after": after})
    return cleaned
