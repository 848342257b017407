"""Thin Celery tasks: ids in, one service call."""

from celery import shared_task

from notifications import services
from notifications.enqueue import DELIVER_MANY


@shared_task(name=DELIVER_MANY, ignore_result=True, acks_late=True)
def deliver_many(delivery_ids: list[str]) -> dict:
    return services.deliveries_attempt(delivery_ids)


@shared_task(ignore_result=True)
def sweep() -> dict:
    return services.deliveries_sweep()


@shared_task(ignore_result=True)
def prune_idempotency_keys() -> int:
    return services.idempotency_prune()
