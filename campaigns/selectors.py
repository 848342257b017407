"""Reads of campaigns shared by the API and the admin."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery

from campaigns.models import Campaign, CampaignRecipient, CampaignRun, Segment
from campaigns.segments import audience_filter, compile_rules
from communication.models import User
from notifications.models import Delivery

PREVIEW_SAMPLE = 20
# A recurring campaign may have a run an hour for years: a campaign shows its latest.
RUNS_SHOWN = 50
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


def campaign_list() -> QuerySet[Campaign]:
    """Campaigns, newest first, with their steps and latest runs (three queries a page)."""
    return Campaign.objects.order_by("-created_at", "-id").prefetch_related(
        "steps",
        Prefetch(
            "runs",
            queryset=CampaignRun.objects.filter(
                id__in=Subquery(
                    CampaignRun.objects.filter(campaign_id=OuterRef("campaign_id"))
                    .order_by("-slot")
                    .values("id")[:RUNS_SHOWN]
                )
            ).order_by("-slot"),
            to_attr="latest_runs",
        ),
    )


def campaign_get(*, campaign_id: Any) -> Campaign:
    """The campaign ``campaign_id`` with its steps and latest runs; raises
    ``Campaign.DoesNotExist``."""
    return campaign_list().get(id=campaign_id)


def campaign_recipients(
    *, campaign: Campaign, state: str | None = None
) -> QuerySet[CampaignRecipient]:
    """The ledger rows of ``campaign`` (every run), oldest first, optionally in one ``state``."""
    rows = CampaignRecipient.objects.filter(run__campaign=campaign).select_related("step", "user")
    if state:
        rows = rows.filter(state=state)
    return rows.order_by("id")


# The delivery statuses a results row counts in its "waiting" column (not handed over yet).
WAITING = ("scheduled", "held", "queued", "sending")


def campaign_results(*, campaign: Campaign) -> list[dict[str, Any]]:
    """The campaign's deliveries per step and variant, by status (one query): rows of
    ``{"position", "template", "variant", "total", "waiting", "<status>": n …}`` ordered by
    step and variant."""
    steps = {s.id: s for s in campaign.steps.all()}
    rows = (
        Delivery.objects.filter(notification__request__campaign_id=campaign.id)
        .values("notification__request__step_id", "variant", "status")
        .annotate(n=Count("id"))
    )
    out: dict[tuple[Any, str], dict[str, Any]] = {}
    for row in rows:
        step = steps.get(row["notification__request__step_id"])
        key = (step.position if step else None, row["variant"])
        entry = out.setdefault(
            key,
            {
                "position": key[0],
                "template": step.template_key if step else "",
                "variant": row["variant"],
                "total": 0,
                "waiting": 0,
                **dict.fromkeys(Delivery.Status.values, 0),
            },
        )
        entry[row["status"]] += row["n"]
        entry["total"] += row["n"]
        if row["status"] in WAITING:
            entry["waiting"] += row["n"]
    return [out[k] for k in sorted(out, key=lambda k: (k[0] or 0, k[1]))]
