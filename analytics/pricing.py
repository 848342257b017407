"""What a message cost: per-message prices from ``settings.PROVIDER_PRICES``.

The setting (JSON) is ``{provider alias: {channel: price}}``. A price is a number (a message's
price, in ``COST_CURRENCY``) or, for SMS, an object of destination prefixes (``"+33"``,
``"+1"``) and ``"*"`` for every other destination, whose price is per segment: the longest
prefix of the number wins. A channel or destination with no price has no known cost (``None``),
which reports keep apart from a free message (``0``).

:func:`validate` runs at start-up (``AnalyticsConfig.ready``): a malformed setting stops the
process with a message naming the entry, instead of costs silently missing.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_PREFIX = re.compile(r"^\+[0-9]{1,15}$")
# E.164 numbers have at most 15 digits after "+".
_LONGEST_PREFIX = 16


def price(provider: str, channel: str, *, address: str = "", segments: int = 1) -> Decimal | None:
    """The cost of one message sent by ``provider`` (an alias) on ``channel`` to ``address``
    (SMS: an E.164 number, priced by its longest listed prefix, times ``segments``), or None
    when no price is configured for it."""
    by_channel = settings.PROVIDER_PRICES.get(provider)
    if not isinstance(by_channel, dict):
        return None
    entry = by_channel.get(channel)
    if entry is None:
        return None
    if isinstance(entry, dict):
        for length in range(min(len(address), _LONGEST_PREFIX), 1, -1):
            found = entry.get(address[:length])
            if found is not None:
                return _decimal(found) * max(segments, 1)
        fallback = entry.get("*")
        return None if fallback is None else _decimal(fallback) * max(segments, 1)
    return _decimal(entry)


def _decimal(value: Any) -> Decimal:
    # Through str: Decimal(0.07) would keep the float's binary error (0.0700000000000000066…).
    return Decimal(str(value))


def validate(prices: Any) -> None:
    """Raises ImproperlyConfigured naming the first malformed entry of ``prices`` (the
    ``PROVIDER_PRICES`` value)."""
    if not isinstance(prices, dict):
        raise ImproperlyConfigured(
            "PROVIDER_PRICES must be a JSON object {provider alias: {channel: price}}, "
            f"not {type(prices).__name__}."
        )
    for provider, by_channel in prices.items():
        if not isinstance(by_channel, dict):
            raise ImproperlyConfigured(
                f"PROVIDER_PRICES[{provider!r}] must be an object {{channel: price}}."
            )
        for channel, entry in by_channel.items():
            where = f"PROVIDER_PRICES[{provider!r}][{channel!r}]"
            if isinstance(entry, dict):
                if channel != "sms":
                    raise ImproperlyConfigured(
                        f"{where}: only SMS is priced by destination; give a number."
                    )
                if not entry:
                    raise ImproperlyConfigured(f"{where}: an empty object prices nothing.")
                for prefix, value in entry.items():
                    if prefix != "*" and not _PREFIX.match(prefix):
                        raise ImproperlyConfigured(
                            f"{where}: {prefix!r} is not a destination prefix "
                            '("+" and digits, such as "+33") nor "*".'
                        )
                    _check_number(f"{where}[{prefix!r}]", value)
            else:
                _check_number(where, entry)


def _check_number(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ImproperlyConfigured(f"{where}: {value!r} is not a price (a number).")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ImproperlyConfigured(f"{where}: {value!r} is not a price (a number).") from None
    if not number.is_finite() or number < 0:
        raise ImproperlyConfigured(f"{where}: {value!r} is not a price (a number ≥ 0).")
