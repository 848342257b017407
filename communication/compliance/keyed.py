"""The keyed hash that stands for an address or a person once their data is erased.

HMAC-SHA256 under ``SUPPRESSION_HASH_KEY``, a key of its own that is never rotated with the
others: an erased address cannot be hashed again under a new key, so its suppression would be
lost.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings


def keyed_hash(value: str) -> str:
    """The hex HMAC-SHA256 of ``value`` (already normalised) under ``SUPPRESSION_HASH_KEY``."""
    key = settings.SUPPRESSION_HASH_KEY.encode()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
