"""Thin Celery tasks: ids in, one service call."""

from celery import shared_task
from django.utils import timezone

from notifications import services
from notifications.enqueue import DELIVER_MANY
from notifications.services import bulk, digests, webhooks


@shared_task(name=DELIVER_MANY, ignore_result=True, acks_late=True)
def deliver_many(delivery_ids: list[str]) -> dict:
    return services.deliveries_attempt(delivery_ids)


@shared_task(ignore_result=True)
def sweep() -> dict:
    # Bulk requests left half fanned out (a worker died) go back on the bulk queue.
    return {**services.deliveries_sweep(), "bulk_resumed": bulk.bulk_resume_stalled()}


@shared_task(ignore_result=True)
def release_digests() -> int:
    return digests.digests_release_due(now=timezone.now())


@shared_task(ignore_result=True)
def prune_idempotency_keys() -> int:
    return services.idempotency_prune()


@shared_task(ignore_result=True, acks_late=True)
def bulk_fan_out(request_id: str) -> dict:
    return bulk.bulk_fan_out(request_id)


@shared_task(name="notifications.tasks.webhooks_dispatch", ignore_result=True, acks_late=True)
def webhooks_dispatch() -> dict:
    return webhooks.messages_dispatch()


@shared_task(ignore_result=True)
def webhooks_sweep() -> dict:
    return webhooks.webhooks_sweep()


@shared_task(ignore_result=True)
def webhooks_prune() -> int:
    return webhooks.webhooks_prune()
