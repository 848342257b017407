from celery import shared_task

from communication import heartbeat


@shared_task(ignore_result=True)
def heartbeat_roundtrip():
    """Beat → broker → worker: proves the whole chain, seen in /health/ready as 'roundtrip'."""
    heartbeat.beat_once("roundtrip", "celery")
