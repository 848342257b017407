"""A frequency cap under concurrency: twenty sends accepted at once by several threads (as
several web processes would), delivered by two real worker processes racing on the same queues,
with SendGrid played by a local HTTP server. Exactly the cap reaches the provider."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections
from werkzeug import Response

from analytics.models import Event
from communication.models import Category, User
from conftest import held_open, wait_for
from notifications import services
from notifications.models import CapSlot, Delivery

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PREFIX = "caps-"
SENDGRID = "/sendgrid/v3/mail/send"


def waiting() -> int:
    """Workers waiting at their cap decision: on the ledger's table, or on a person's lock
    behind another worker holding it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted"
            " AND (relation = %s::regclass OR locktype = 'advisory')",
            [CapSlot._meta.db_table],
        )
        return int(cursor.fetchone()[0])


def test_a_cap_of_three_holds_under_twenty_concurrent_sends_and_two_workers(
    start_worker, httpserver, settings
):
    settings.CELERY_QUEUE_PREFIX = PREFIX  # what this process enqueues goes to these workers
    received: list[str] = []
    lock = threading.Lock()

    def sendgrid(request):
        with lock:
            received.append(json.loads(request.data)["personalizations"][0]["to"][0]["email"])
        return Response("", status=202)

    httpserver.expect_request(SENDGRID).respond_with_handler(sendgrid)
    env = {
        "EMAIL_PROVIDERS": "sendgrid",
        "SENDGRID_API_KEY": "SG.test",
        "SENDGRID_API_URL": httpserver.url_for("/sendgrid/v3/"),
        "CACHE_KEY_PREFIX": f"caps-{uuid.uuid4().hex[:8]}",
    }
    workers = [start_worker(env, PREFIX), start_worker(env, PREFIX)]
    Category.objects.create(
        key="promotions",
        name="Promotions",
        default_channels=["email"],
        frequency_caps={"email": {"limit": 3, "period": "7d"}},
    )
    User.objects.create(username="erin", external_id="erin", email="erin@example.com")

    def send(n: int) -> str:
        try:
            outcome = services.notification_send(
                caller="shop",
                payload={
                    "recipients": [{"user_id": "erin"}],
                    "category": "promotions",
                    "channels": ["email"],
                    "content": {"subject": f"Offer {n}", "body": "Half price."},
                },
            )
            return outcome.body["notifications"][0]["deliveries"][0]["id"]
        finally:
            connections.close_all()

    # The ledger is locked while the sends are accepted: each worker claims a batch and stops
    # at its cap decision, so that both decide at the same instant once it is released (the
    # race a missing lock would lose). Two waves, so that the second worker has a batch too.
    ids: list[str] = []
    with held_open(f"LOCK TABLE {CapSlot._meta.db_table} IN ACCESS EXCLUSIVE MODE"):
        with ThreadPoolExecutor(5) as pool:
            ids += pool.map(send, range(10))
            wait_for(lambda: waiting() >= 1, 30, what="a worker at its cap decision")
            ids += pool.map(send, range(10, 20))
        wait_for(lambda: waiting() == 2, 30, what="both workers at their cap decision")

    def settled():
        done = Delivery.objects.filter(id__in=ids, status__in=("sent", "skipped"))
        return done.count() == 20 or None

    wait_for(settled, 60, what="every delivery to be sent or skipped")
    assert received == ["erin@example.com"] * 3, "exactly the cap reached the provider"
    statuses = list(Delivery.objects.filter(id__in=ids).values_list("status", "reason"))
    assert sorted(statuses) == [("sent", "")] * 3 + [("skipped", "frequency_cap")] * 17
    assert CapSlot.objects.count() == 3
    assert (
        Event.objects.filter(delivery_id__in=ids, type="skipped", data__reason="frequency_cap")
        .values("delivery_id")
        .distinct()
        .count()
        == 17
    )
    # Both workers took part in the race, and both decided skips.
    for worker in workers:
        assert "'skipped'" in worker.log.read_text(), worker.log.read_text()[-2000:]
