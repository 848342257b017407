"""A campaign's runs: arming its schedule (nothing for a one-off, a django-celery-beat
``PeriodicTask`` for a cron), starting a run for a slot (once, whatever races), and the beat's
``due`` pass that starts, advances and completes what is due. The fan-out is in ``fanout``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import zoneinfo
from typing import Any

from croniter import croniter  # type: ignore[import-untyped]
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from campaigns.audiences import audience_materialise
from campaigns.models import Campaign, CampaignRun
from campaigns.services.fanout import (
    campaign_settle,
    fanout_enqueue,
    fanout_stalled_kick,
    runs_advance,
)
from campaigns.services.guardrail import guardrail_check
from campaigns.services.status import campaign_transition
from communication.celery import queue
from communication.exceptions import APIError, ConflictError

logger = logging.getLogger(__name__)

S = Campaign.Status
RECURRING_SLOT = "campaigns.tasks.recurring_slot"


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name) if name else dt.UTC
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


# --------------------------------------------------------------------------- arming


def _task_name(campaign: Campaign) -> str:
    return f"campaign:{campaign.id}"


@transaction.atomic
def campaign_arm(campaign: Campaign) -> None:
    """Called when ``campaign`` becomes ``scheduled``. A one-off needs nothing in the broker (the
    beat's ``due`` task starts it when its time comes); a cron gets its ``PeriodicTask`` (the
    crontab in the campaign's zone), created or changed to match."""
    if not campaign.cron:
        campaign_disarm(campaign)
        return
    fields_of_cron = campaign.cron.split()
    if len(fields_of_cron) != 5 or not croniter.is_valid(campaign.cron):
        raise APIError(
            f"Invalid cron expression {campaign.cron!r} (five fields: minute hour day month "
            "weekday).",
            code="invalid_cron",
            fields={"cron": ["Invalid cron expression."]},
        )
    minute, hour, day_of_month, month_of_year, day_of_week = fields_of_cron
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
        timezone=campaign.timezone or "UTC",
    )
    fields: dict[str, Any] = {
        "task": RECURRING_SLOT,
        "crontab": crontab,
        "interval": None,
        "kwargs": json.dumps({"campaign_id": str(campaign.id)}),
        "queue": queue("bulk"),
        "enabled": True,
    }
    task, _ = PeriodicTask.objects.update_or_create(name=_task_name(campaign), defaults=fields)
    if campaign.periodic_task_id != task.id:
        Campaign.objects.filter(pk=campaign.pk).update(periodic_task=task)
        campaign.periodic_task = task


@transaction.atomic
def campaign_disarm(campaign: Campaign) -> None:
    """Removes the campaign's ``PeriodicTask`` (cancel, back to draft, delete)."""
    Campaign.objects.filter(pk=campaign.pk).update(periodic_task=None)
    PeriodicTask.objects.filter(name=_task_name(campaign)).delete()
    campaign.periodic_task = None


def cron_slot(campaign: Campaign, *, now: dt.datetime | None = None) -> dt.datetime:
    """The slot a recurring run serves: the latest time ``campaign.cron`` fires at or before
    ``now``, read in the campaign's zone (beat passes no time: two beats, a late beat or a
    restart all derive the same slot)."""
    now = now or timezone.now()
    local = now.astimezone(_zone(campaign.timezone))
    # croniter counts in minutes: the previous fire before the next minute is this minute's
    # when it fires now.
    base = local.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    slot: dt.datetime = croniter(campaign.cron, base).get_prev(dt.datetime)
    return slot.astimezone(dt.UTC)


def recurring_slot(campaign_id: Any, *, now: dt.datetime | None = None) -> CampaignRun | None:
    """The beat's tick of a recurring campaign: starts the run of the slot it derives (None
    when that slot already has its run, or the campaign is not scheduled or running)."""
    campaign = Campaign.objects.select_related("segment").filter(id=campaign_id).first()
    if campaign is None or not campaign.cron or campaign.status not in (S.SCHEDULED, S.RUNNING):
        return None
    return run_start(campaign, cron_slot(campaign, now=now))


# --------------------------------------------------------------------------- runs


def run_start(campaign: Campaign, slot: dt.datetime) -> CampaignRun | None:
    """Starts ``campaign``'s run for ``slot``: creates it (unique on campaign and slot, so None
    when it exists already: a second beat, a restart, a race), moves a scheduled campaign to
    running, writes the first step's ledger with one INSERT … SELECT, and enqueues its fan-out
    once that commits."""
    first = campaign.steps.order_by("position").first()
    with transaction.atomic():
        try:
            with transaction.atomic():
                run = CampaignRun.objects.create(campaign=campaign, slot=slot)
        except IntegrityError:
            return None
        if campaign.status == S.SCHEDULED:
            try:
                campaign_transition(campaign, S.RUNNING)
            except ConflictError:
                # Paused, cancelled or sent back to draft meanwhile: no run for this slot.
                transaction.set_rollback(True)
                return None
        total = audience_materialise(campaign, run, first, due_at=slot) if first is not None else 0
        run.total = total
        run.save(update_fields=["total"])
        if first is not None:
            step_id = first.id
            transaction.on_commit(lambda: fanout_enqueue(run.id, step_id))
    logger.info(
        "campaign run started",
        extra={"campaign": str(campaign.id), "run": str(run.id), "recipients": total},
    )
    return run


def _one_off_slot(campaign: Campaign) -> dt.datetime:
    return campaign.send_at or campaign.scheduled_at or timezone.now()


def campaigns_due(*, now: dt.datetime | None = None) -> dict[str, int]:
    """The beat's pass over campaigns (every few seconds; safe in several beats at once):
    starts one-off campaigns whose time has come, fans out later steps that became due (and
    runs whose fan-out stopped, e.g. its worker died), completes finished runs and campaigns,
    and checks the guardrail of running ones."""
    now = now or timezone.now()
    counts = {"started": 0, "kicked": 0, "completed": 0, "paused": 0}
    for campaign in Campaign.objects.select_related("segment").filter(status=S.SCHEDULED, cron=""):
        if (campaign.send_at or now) <= now and run_start(campaign, _one_off_slot(campaign)):
            counts["started"] += 1
    for campaign in Campaign.objects.filter(status=S.RUNNING):
        if guardrail_check(campaign):
            counts["paused"] += 1
            continue
        steps = list(campaign.steps.order_by("position"))
        running = list(campaign.runs.filter(status=CampaignRun.Status.RUNNING))
        for run in running:
            if runs_advance(run, steps):
                continue
            counts["kicked"] += fanout_stalled_kick(run, now=now)
        counts["completed"] += campaign_settle(campaign)
    return counts
