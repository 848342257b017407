"""Thin Celery tasks: ids in, one service call."""

from celery import shared_task

from messaging import services
from messaging.services.offline import NOTIFY_OFFLINE_TASK


@shared_task(name=NOTIFY_OFFLINE_TASK, ignore_result=True, acks_late=True)
def notify_offline(participant_id: int) -> str:
    return services.participant_notify_offline(participant_id)


@shared_task(ignore_result=True)
def presence_sweep() -> int:
    return services.presence_sweep()
