import datetime as dt

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from communication import heartbeat
from communication.models import RealtimeEvent


@shared_task(ignore_result=True)
def heartbeat_roundtrip():
    """Beat → broker → worker: proves the whole chain, seen in /health/ready as 'roundtrip'."""
    heartbeat.beat_once("roundtrip", "celery")


@shared_task(ignore_result=True)
def prune_realtime_events():
    """Forgets websocket events older than REALTIME_EVENT_RETENTION_DAYS (a client resuming from
    before that gets ``resync_required``)."""
    cutoff = timezone.now() - dt.timedelta(days=settings.REALTIME_EVENT_RETENTION_DAYS)
    return RealtimeEvent.objects.filter(created_at__lt=cutoff).delete()[0]
