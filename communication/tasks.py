import datetime as dt

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from communication import audit, heartbeat
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


@shared_task(ignore_result=True)
def audit_chain() -> int:
    """Seals the audit entries committed since the last run (``communication.audit``)."""
    return audit.audit_chain()


@shared_task(ignore_result=True)
def audit_verify() -> bool:
    """Recomputes the whole audit chain; a break is logged as an error and shown in the console."""
    return audit.audit_verify().ok
