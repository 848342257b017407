"""The keyed hashes that stand for an address, a token or a person where the value itself is
encrypted (``communication.fields``) or erased.

HMAC-SHA256 under ``LOOKUP_HASH_KEY``, a key of its own that is never rotated with the
encryption keys: a hash must stay findable, and an erased address cannot be hashed again under a
new key (its suppression would be lost).
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings


def keyed_hash(value: str) -> str:
    """The hex HMAC-SHA256 of ``value`` (already normalised) under ``LOOKUP_HASH_KEY``."""
    key = settings.LOOKUP_HASH_KEY.encode()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def lookup_hash(value: str, *, casefold: bool = True) -> str:
    """The hash an equality lookup compares: of ``value`` stripped and, with ``casefold``,
    lower-cased, so that an address is found however its caller cased it (a lower-cased email
    is what ``keyed_hash`` callers already pass). Case-sensitive values (device tokens, push
    endpoints) are hashed with ``casefold=False``."""
    value = value.strip()
    return keyed_hash(value.lower() if casefold else value)
