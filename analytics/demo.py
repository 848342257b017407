"""``manage.py seed_demo``: recount the rollups over the demo's history (its events were
dated back after they were written, so the minute's rollup run would not count those hours)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from analytics import rollups


def seed(users: list, out) -> None:
    now = timezone.now()
    result = rollups.rollup_rebuild(now - dt.timedelta(days=15), now)
    out.write(f"analytics: rollups rebuilt ({result.hours} hours)")
