"""Campaigns for the engine's tests, made directly with the ORM (the life cycle's create service
is tested on its own)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from campaigns.models import Campaign, CampaignStep, Segment, StaticList, StaticListMember
from communication.models import User


def users(prefix: str, n: int, **fields: Any) -> list[User]:
    """``n`` users ``<prefix>0`` … with an email address each, in one statement."""
    return User.objects.bulk_create(
        [
            User(
                username=f"{prefix}{i}",
                external_id=f"{prefix}{i}",
                email=f"{prefix}{i}@example.com",
                attributes={"cohort": prefix},
                **fields,
            )
            for i in range(n)
        ]
    )


def segment_of(prefix: str) -> Segment:
    """The users ``users(prefix, …)`` made."""
    return Segment.objects.create(
        name=prefix, rules={"field": "attributes.cohort", "op": "eq", "value": prefix}
    )


def static_list(name: str, members: list[dict[str, Any]]) -> StaticList:
    static = StaticList.objects.create(name=name)
    StaticListMember.objects.bulk_create(
        [StaticListMember(static_list=static, **m) for m in members]
    )
    return static


def campaign(
    *,
    segment: Segment | None = None,
    static: StaticList | None = None,
    steps: list[dict[str, Any]] | None = None,
    status: str = Campaign.Status.SCHEDULED,
    **fields: Any,
) -> Campaign:
    """A campaign in ``status`` (scheduled by default) with ``steps`` (default: one inline
    email)."""
    fields.setdefault("name", "Spring")
    fields.setdefault("category_id", "alerts")
    fields.setdefault("channels", ["email"])
    made = Campaign.objects.create(segment=segment, static_list=static, status=status, **fields)
    for position, step in enumerate(
        steps or [{"content": {"subject": "Hello", "body": "Hi."}}], start=1
    ):
        step.setdefault("content", {"subject": f"Step {position}", "body": "Hi."})
        CampaignStep.objects.create(campaign=made, position=position, **step)
    return made


DAY = dt.timedelta(days=1)
