"""Time-ordered primary keys.

Random (version 4) UUIDs scatter inserts over every page of a primary-key index: each insert
dirties another page, and after each checkpoint PostgreSQL writes that page whole into the WAL.
On the send path that was 4.4 full-page images and 29 KB of WAL per notification. Version 7
UUIDs (RFC 9562) begin with the time in milliseconds, so new rows land on the last pages of
their indexes, as with a sequence, and the ids stay opaque and unguessable (74 random bits).

Python 3.14 has ``uuid.uuid7``; the ``uuid6`` package's version keeps ids strictly increasing
by moving its clock a millisecond ahead for every id past the first in a millisecond, which at
a few thousand ids a second drifts from the real time. Ordering within a millisecond is not
needed here: those ids all land on the same last pages anyway.
"""

from __future__ import annotations

import secrets
import time
import uuid


def uuid7() -> uuid.UUID:
    """A version 7 UUID: 48 bits of Unix time in ms, the version, 74 random bits, the variant."""
    ms = time.time_ns() // 1_000_000
    rand = secrets.randbits(74)
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (rand >> 62) << 64  # 12 bits (rand_a)
        | 0b10 << 62
        | rand & 0x3FFF_FFFF_FFFF_FFFF  # 62 bits (rand_b)
    )
    return uuid.UUID(int=value)
