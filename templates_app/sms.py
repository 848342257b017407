"""SMS encoding and segment counting (3GPP TS 23.038).

A message in the GSM 7-bit alphabet takes 160 septets in one segment, 153 per segment once it
is split (the user-data header takes the rest); an extension character (``€ [ ] { } | ^ ~ \\``
and form feed) is an escape plus a character, two septets, and is never split across segments.
Anything outside the alphabet sends the whole message as UCS-2: 70 code units, 67 per segment
when split, and a character outside the BMP (most emoji) is two code units that stay together.
"""

from __future__ import annotations

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7 = "GSM-7"
UCS2 = "UCS-2"

SINGLE = {GSM7: 160, UCS2: 70}
MULTI = {GSM7: 153, UCS2: 67}


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def non_gsm7(text: str) -> list[str]:
    """The distinct characters of ``text`` that force UCS-2, in order of appearance."""
    seen: dict[str, None] = {}
    for ch in text:
        if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION:
            seen.setdefault(ch)
    return list(seen)


def _unit_sizes(text: str, encoding: str) -> list[int]:
    if encoding == GSM7:
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def sms_info(text: str) -> dict:
    """``{"encoding", "characters", "units", "segments"}`` for ``text``.

    ``units`` counts septets for GSM-7 and UTF-16 code units for UCS-2.
    """
    encoding = GSM7 if is_gsm7(text) else UCS2
    sizes = _unit_sizes(text, encoding)
    units = sum(sizes)
    if units == 0:
        segments = 0
    elif units <= SINGLE[encoding]:
        segments = 1
    else:
        # Pack characters; one that does not fit whole starts the next segment.
        limit = MULTI[encoding]
        segments, used = 1, 0
        for size in sizes:
            if used + size > limit:
                segments += 1
                used = 0
            used += size
    return {"encoding": encoding, "characters": len(text), "units": units, "segments": segments}


# Characters that Babel and typographers produce and that would turn a whole message into UCS-2
# (twice the segments) for no visible gain on a phone: sent as their GSM-7 look-alikes.
_LOOKALIKES = str.maketrans(
    {
        "\u00a0": " ",  # no-break space (French number grouping, "12,50 €")
        "\u202f": " ",  # narrow no-break space (French "26 %", "07 h 30")
        "\u2009": " ",  # thin space
        "\u2007": " ",  # figure space
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2026": "...",
        "\u00b4": "'",
    }
)


def normalize(text: str) -> str:
    """``text`` with typographic spaces, quotes and dashes replaced by GSM-7 look-alikes."""
    return text.translate(_LOOKALIKES)
