from celery import shared_task

from communication import heartbeat
from communication.compliance import retention


@shared_task(ignore_result=True)
def heartbeat_roundtrip():
    """Beat → broker → worker: proves the whole chain, seen in /health/ready as 'roundtrip'."""
    heartbeat.beat_once("roundtrip", "celery")


@shared_task(ignore_result=True)
def retention_run():
    """Removes the personal data past its RETENTION_<KIND>_DAYS (the realtime event log, whose
    clients resuming from before it get ``resync_required``, included)."""
    return retention.retention_run()
