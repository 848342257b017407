"""Stand-in for the engine's runs module (replaced at merge): the signatures the life cycle calls,
doing nothing."""

from __future__ import annotations

import datetime as dt

from campaigns.models import Campaign, CampaignRun


def campaign_arm(campaign: Campaign) -> None:
    """Stand-in: the engine arms a scheduled campaign (a PeriodicTask for a cron one)."""


def campaign_disarm(campaign: Campaign) -> None:
    """Stand-in: the engine removes the campaign's PeriodicTask."""


def run_start(campaign: Campaign, slot: dt.datetime) -> CampaignRun | None:
    """Stand-in: the engine starts the run of ``slot``."""
    return None


def fanout_kick(campaign: Campaign) -> None:
    """Stand-in: the engine enqueues fan-out for the campaign's running runs."""


def campaign_stop_sending(campaign: Campaign, *, cancel: bool) -> None:
    """Stand-in: the engine cancels pending recipients and queued deliveries on cancel."""
