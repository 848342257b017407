"""Thin Celery tasks: ids in, one service call."""

from celery import shared_task
from django.utils import timezone

from communication.dboutage import is_outage
from notifications import services
from notifications.enqueue import DELIVER_MANY
from notifications.services import bulk, digests, webhooks


@shared_task(name=DELIVER_MANY, bind=True, ignore_result=True, acks_late=True)
def deliver_many(self, delivery_ids: list[str]) -> dict:
    try:
        return services.deliveries_attempt(delivery_ids)
    except Exception as exc:
        # PostgreSQL unreachable: the task comes back in a few seconds rather than leaving its
        # unclaimed deliveries to the sweep's DELIVERY_REPUBLISH_SECONDS (the claimed ones come
        # back when their lease expires).
        if is_outage(exc):
            raise self.retry(exc=exc, countdown=2, max_retries=60) from exc
        raise


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
