"""Reads of campaigns shared by the API and the admin."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from campaigns.models import Segment
from campaigns.segments import audience_filter, compile_rules
from communication.models import User

PREVIEW_SAMPLE = 20
SAMPLE_FIELDS = ("external_id", "locale", "timezone", "organization", "roles", "created_at")


def segment_list() -> QuerySet[Segment]:
    return Segment.objects.order_by("-created_at", "-id")


def segment_get(*, segment_id: Any) -> Segment:
    """The segment ``segment_id``; raises ``Segment.DoesNotExist``."""
    return Segment.objects.get(id=segment_id)


def segment_users(*, rules: Any, category: str | None = None) -> QuerySet[User]:
    """The users ``rules`` selects, as one query: active users with an identity only.
    ``category`` (a key) is what consent and preference rules are about."""
    return User.objects.filter(audience_filter()).filter(compile_rules(rules, category=category))


def segment_count(*, rules: Any, category: str | None = None) -> int:
    """How many users ``rules`` selects (one SQL statement)."""
    return segment_users(rules=rules, category=category).count()


def segment_preview(
    *, rules: Any, category: str | None = None, size: int = PREVIEW_SAMPLE
) -> dict[str, Any]:
    """``{"count", "sample"}``: the size of the segment and its first ``size`` users by
    ``user_id`` (two SQL statements, whatever the segment's size)."""
    users = segment_users(rules=rules, category=category)
    sample = [
        {
            "user_id": row["external_id"],
            "locale": row["locale"],
            "timezone": row["timezone"],
            "organization": row["organization"],
            "roles": row["roles"],
            "created_at": row["created_at"],
        }
        for row in users.order_by("external_id").values(*SAMPLE_FIELDS)[:size]
    ]
    return {"count": users.count(), "sample": sample}
