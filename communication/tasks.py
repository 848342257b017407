from celery import shared_task

from communication import audit, heartbeat
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


@shared_task(ignore_result=True)
def audit_chain() -> int:
    """Seals the audit entries committed since the last run (``communication.audit``)."""
    return audit.audit_chain()


@shared_task(ignore_result=True)
def audit_verify() -> bool:
    """Recomputes the whole audit chain; a break is logged as an error and shown in the console."""
    return audit.audit_verify().ok


@shared_task(ignore_result=True, acks_late=True)
def erasure_run_task(request_id: str, normalised: str):
    """A right-to-erasure request too large to run within its HTTP request (see
    ``communication.compliance.erasure``); running it twice finds it finished."""
    from communication.compliance.erasure import erasure_run  # noqa: PLC0415

    erasure_run(request_id, normalised)
