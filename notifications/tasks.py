"""Thin Celery tasks: ids in, one service call."""

from celery import shared_task

from notifications import services


@shared_task(ignore_result=True, acks_late=True)
def deliver_many(delivery_ids: list[str]) -> dict:
    return services.deliveries_attempt(delivery_ids)


@shared_task(ignore_result=True, acks_late=True)
def deliver(delivery_id: str) -> str:
    """One delivery (messages published before ``deliver_many`` existed, and tests)."""
    return services.delivery_attempt(delivery_id)


@shared_task(ignore_result=True)
def sweep() -> dict:
    return services.deliveries_sweep()


@shared_task(ignore_result=True)
def prune_idempotency_keys() -> int:
    return services.idempotency_prune()
