"""Thin Celery tasks of the beat: the rollups every minute, the partitions daily."""

from celery import shared_task

from analytics import partitions, rollups


@shared_task(ignore_result=True)
def rollup() -> dict:
    return rollups.rollup_run().as_dict()


@shared_task(ignore_result=True)
def maintain_partitions() -> dict:
    return partitions.partitions_maintain()
