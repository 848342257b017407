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


@shared_task(ignore_result=True, acks_late=True)
def erasure_run_task(request_id: str, normalised: str):
    """A right-to-erasure request too large to run within its HTTP request (see
    ``communication.compliance.erasure``); running it twice finds it finished."""
    from communication.compliance.erasure import erasure_run  # noqa: PLC0415

    erasure_run(request_id, normalised)
