"""Admission control of the send API: past its priority class's bound a send is refused (503
``overloaded`` with ``Retry-After``) and nothing of it is stored, another class is still
accepted, and once the backlog drains sends are accepted again. The backlog is written through the
real send service; no worker takes it (the queues' prefix is the test's own) until the test sends
it itself through the real delivery service."""

from __future__ import annotations

import datetime as dt
import math
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from notifications import services
from notifications.models import BulkRecipient, Delivery, NotificationRequest
from notifications.services import admission

pytestmark = pytest.mark.django_db

CONTENT = {"subject": "Disk almost full", "body": "Volume v is at 97%."}


@pytest.fixture
def bounded(settings):
    """Every class bounded at three queued deliveries, the figure read at every request (the
    test steps through states faster than the refresh interval)."""
    settings.CELERY_QUEUE_PREFIX = f"adm{uuid.uuid4().hex[:8]}-"
    settings.SEND_BACKLOG_MAX_REALTIME = 3
    settings.SEND_BACKLOG_MAX_TRANSACTIONAL = 3
    settings.SEND_BACKLOG_MAX_BULK = 3
    settings.SEND_BACKLOG_REFRESH_SECONDS = 0
    settings.SEND_OVERLOADED_RETRY_AFTER = 7


def send(sender, priority: str, recipients: int = 1, **body):
    return sender.post(
        "/api/v1/notifications",
        {
            "recipients": [
                {"email": f"r{uuid.uuid4().hex[:8]}@example.com"} for _ in range(recipients)
            ],
            "channels": ["email"],
            "content": CONTENT,
            "priority": priority,
            **body,
        },
        format="json",
    )


def assert_overloaded(response) -> None:
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["code"] == "overloaded"
    assert body["detail"]
    assert body["retry_after"] == 7
    assert response["Retry-After"] == "7"


def queued(priority: str) -> list[str]:
    return [
        str(i)
        for i in Delivery.objects.filter(status="queued", priority=priority).values_list(
            "id", flat=True
        )
    ]


def test_a_send_past_its_class_bound_is_refused_until_the_backlog_drains(bounded, sender):
    assert send(sender, "normal", recipients=4).status_code == 202  # 4 queued: past the bound
    requests_before = NotificationRequest.objects.count()
    deliveries_before = Delivery.objects.count()

    assert_overloaded(send(sender, "normal"))
    assert_overloaded(send(sender, "high"))  # the same class: transactional
    assert NotificationRequest.objects.count() == requests_before, "nothing stored"
    assert Delivery.objects.count() == deliveries_before

    # Urgent sends and bulk traffic have backlogs of their own.
    assert send(sender, "urgent").status_code == 202
    assert send(sender, "low").status_code == 202

    # A send for later adds nothing to today's backlog.
    later = (timezone.now() + dt.timedelta(hours=2)).isoformat()
    assert send(sender, "normal", scheduled_at=later).status_code == 202

    # The backlog drains (sent through the real delivery service, to the outbox): accepted again.
    services.deliveries_attempt(queued("normal")[:2])
    assert len(queued("normal")) == 2
    assert send(sender, "normal").status_code == 202


def test_a_bulk_campaign_backlog_refuses_bulk_sends_only(bounded, sender):
    assert send(sender, "low", recipients=5).status_code == 202
    before = (NotificationRequest.objects.count(), BulkRecipient.objects.count())

    bulk = sender.post(
        "/api/v1/notifications/bulk",
        {
            "recipients": [{"email": "a@example.com"}, {"email": "b@example.com"}],
            "content": CONTENT,
        },
        format="json",
    )
    assert_overloaded(bulk)
    assert (NotificationRequest.objects.count(), BulkRecipient.objects.count()) == before
    assert send(sender, "normal").status_code == 202
    assert send(sender, "urgent").status_code == 202


def test_invalid_input_is_still_a_400_when_overloaded(bounded, sender):
    assert send(sender, "normal", recipients=4).status_code == 202
    response = sender.post("/api/v1/notifications", {"recipients": []}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


def test_the_figure_is_read_at_most_once_per_refresh_interval(bounded, settings, sender):
    settings.SEND_BACKLOG_REFRESH_SECONDS = 3600
    admission._figure.read_at = -math.inf  # too old: the next send reads it
    assert send(sender, "normal", recipients=4).status_code == 202
    # Past the bound now, but this process read its figure (empty) before that send's write.
    assert send(sender, "normal").status_code == 202
    admission._figure.read_at = -math.inf
    assert_overloaded(send(sender, "normal"))


def test_the_backlog_is_counted_from_its_index_alone():
    # The sweep's delivery_queued (on queued deliveries too) set aside: on an empty table the
    # planner takes either; on a large one, the one whose condition is the priority.
    statement = admission._statement(["realtime", "transactional", "bulk"])
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX delivery_queued")  # undone with the test's transaction
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            f"EXPLAIN {statement}",
            [["urgent"], 1001, ["high", "normal"], 10001, ["low"], 20001],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan, plan
    assert plan.count("Index Only Scan using delivery_backlog") == 3, plan
    assert plan.count("Index Cond: (priority = ANY") == 3, plan
