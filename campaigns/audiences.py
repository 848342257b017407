"""Stand-in for the engine's audiences module (replaced at merge): a campaign's audience size."""

from __future__ import annotations

from campaigns import selectors
from campaigns.models import Campaign, StaticListMember


def audience_count(campaign: Campaign) -> int:
    """How many recipients the campaign's segment or static list holds now (0 without one)."""
    if campaign.segment is not None:
        return selectors.segment_count(rules=campaign.segment.rules)
    if campaign.static_list_id is not None:
        return StaticListMember.objects.filter(static_list_id=campaign.static_list_id).count()
    return 0
