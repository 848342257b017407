"""Thin Celery tasks of campaigns: ids in, one service call."""

from celery import shared_task

from campaigns.services import fanout, runs


@shared_task(name=fanout.FAN_OUT, ignore_result=True, acks_late=True)
def fan_out(run_id: str, step_id: str) -> dict:
    batch = fanout.fanout_step(run_id, step_id)
    return {"outcome": batch.outcome, "queued": batch.queued}


@shared_task(name=runs.RECURRING_SLOT, ignore_result=True)
def recurring_slot(campaign_id: str) -> str | None:
    run = runs.recurring_slot(campaign_id)
    return str(run.id) if run is not None else None


@shared_task(name="campaigns.tasks.due", ignore_result=True)
def due() -> dict:
    return runs.campaigns_due()
