"""Writes of campaigns, one module per family of verbs: segments, static lists, campaigns (their
life cycle), runs (slots and audiences) and fan-out."""

from campaigns.services.campaigns import (
    campaign_approve,
    campaign_cancel,
    campaign_create,
    campaign_pause,
    campaign_resume,
    campaign_schedule,
    campaign_test_send,
    campaign_update,
    campaign_validate,
)
from campaigns.services.segments import segment_create, segment_delete, segment_update

__all__ = [
    "campaign_approve",
    "campaign_cancel",
    "campaign_create",
    "campaign_pause",
    "campaign_resume",
    "campaign_schedule",
    "campaign_test_send",
    "campaign_update",
    "campaign_validate",
    "segment_create",
    "segment_delete",
    "segment_update",
]
