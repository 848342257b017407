"""Writes ``communication.schedules.SCHEDULES`` to django-celery-beat; idempotent."""

import json

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from communication.celery import queue as celery_queue
from communication.schedules import RETIRED, SCHEDULES


class Command(BaseCommand):
    help = "Create or update the periodic tasks defined in code."

    @transaction.atomic
    def handle(self, *args, **opts):
        for name, (task, seconds, queue) in SCHEDULES.items():
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=int(seconds), period=IntervalSchedule.SECONDS
            )
            PeriodicTask.objects.update_or_create(
                name=name,
                defaults={
                    "task": task,
                    "interval": interval,
                    "queue": celery_queue(queue),
                    "enabled": True,
                    "kwargs": json.dumps({}),
                },
            )
        retired, _ = PeriodicTask.objects.filter(name__in=RETIRED).delete()
        self.stdout.write(f"{len(SCHEDULES)} schedule(s) written, {retired} retired")
