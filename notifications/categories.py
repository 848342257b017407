"""The categories the send path reads, cached per process.

Categories are a small reference table that staff change a few times a year, and every send reads
one: a process keeps what it read for ``TTL_SECONDS``. A save or delete in this process forgets the
entry at once (signals); another process sees the change within ``TTL_SECONDS``, since signals do
not cross processes. An unknown key is never cached, so a category created elsewhere is found on
its first use. A rolled-back change sends no signal: settings overridden (as every test does)
start from an empty cache.
"""

from __future__ import annotations

import threading
import time

from django.core.signals import setting_changed
from django.db.models.signals import post_delete, post_save

from communication.models import Category

# How stale another process's copy may get after a change made elsewhere (admin, migration).
TTL_SECONDS = 30.0

_lock = threading.Lock()
_cached: dict[str, tuple[float, Category]] = {}


def category_get(key: str) -> Category | None:
    """The category ``key``, or None when there is none (a query only on a miss)."""
    entry = _cached.get(key)
    if entry is not None and time.monotonic() - entry[0] < TTL_SECONDS:
        return entry[1]
    category = Category.objects.filter(key=key).first()
    if category is not None:
        with _lock:
            _cached[key] = (time.monotonic(), category)
    return category


def forget() -> None:
    """Empties this process's cache."""
    with _lock:
        _cached.clear()


def _on_change(**kwargs) -> None:
    # The key itself may have changed: forget everything (the table is small).
    forget()


post_save.connect(_on_change, sender=Category, dispatch_uid="notifications.categories.save")
post_delete.connect(_on_change, sender=Category, dispatch_uid="notifications.categories.delete")
setting_changed.connect(_on_change, dispatch_uid="notifications.categories.settings")
