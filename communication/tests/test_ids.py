"""Time-ordered ids: RFC 9562 version 7, sorting by creation time across milliseconds."""

from __future__ import annotations

import time
import uuid

from communication.ids import uuid7


def test_a_version_7_uuid_carries_the_time_and_random_bits():
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000

    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after
    assert len({uuid7() for _ in range(100_000)}) == 100_000


def test_ids_made_in_a_later_millisecond_sort_after_earlier_ones():
    earlier = [uuid7() for _ in range(50)]
    time.sleep(0.002)
    later = [uuid7() for _ in range(50)]
    assert max(earlier) < min(later)
    assert str(max(earlier)) < str(min(later))  # as text too (the API's form)
