"""``rows.insert_all``: several tables in one statement, each value as the ORM would store it."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from analytics.models import Event
from communication import rows
from communication.models import Category
from notifications.models import Delivery, Notification, NotificationRequest

pytestmark = pytest.mark.django_db


def test_rows_of_four_tables_in_one_statement_read_back_as_written():
    Category.objects.get_or_create(key="alerts", defaults={"name": "Alerts"})
    at = dt.datetime(2026, 11, 29, 3, 4, 5, 123456, tzinfo=dt.UTC)
    request = NotificationRequest(
        caller="svc", category_id="alerts", content={"subject": "Hé", "n": [1, 2.5, None]}
    )
    notifications = [
        Notification(request=request, category_id="alerts", recipient={"email": f"{i}@x.org"})
        for i in range(3)
    ]
    deliveries = [
        Delivery(notification=n, channel="email", address=f"{i}@x.org", status="queued")
        for i, n in enumerate(notifications)
    ]
    deliveries[0].scheduled_for = at
    deliveries[1].template_version = uuid.UUID(int=7)
    events = [Event(type="queued", delivery_id=d.id, latency_ms=1.5) for d in deliveries]

    with CaptureQueriesContext(connection) as queries:
        rows.insert_all([[request], notifications, [], deliveries, events])

    assert len(queries) == 1
    stored = NotificationRequest.objects.get(id=request.id)
    assert stored.content == {"subject": "Hé", "n": [1, 2.5, None]}
    assert stored.created_at == request.created_at  # auto_now_add, to the microsecond
    assert stored.channels == [] and stored.scheduled_at is None
    assert Notification.objects.filter(request=request).count() == 3
    first, second, _ = (Delivery.objects.get(id=d.id) for d in deliveries)
    assert first.scheduled_for == at
    assert second.template_version == uuid.UUID(int=7)
    assert first.attempts == 0 and first.error == "" and first.lease_until is None
    written = Event.objects.filter(delivery_id__in=[d.id for d in deliveries])
    assert written.count() == 3
    assert all(e.occurred_at is not None and e.latency_ms == 1.5 for e in written)  # db_default


def test_a_broken_row_writes_nothing():
    Category.objects.get_or_create(key="alerts", defaults={"name": "Alerts"})
    request = NotificationRequest(caller="svc", category_id="alerts")
    twice = Notification(request=request, category_id="alerts", recipient={})
    with pytest.raises(IntegrityError), transaction.atomic():
        rows.insert_all([[request], [twice, twice]])  # the same primary key twice
    assert not NotificationRequest.objects.filter(id=request.id).exists()


def test_get_reads_a_row_as_the_orm_does():
    Category.objects.update_or_create(
        key="digest",
        defaults={"name": "Digest", "default_channels": ["email", "in_app"], "mandatory": True},
    )

    with CaptureQueriesContext(connection) as queries:
        category = rows.get(Category, "key", "digest")
    assert len(queries) == 1
    expected = Category.objects.get(key="digest")
    assert category == expected and not category._state.adding
    assert category.default_channels == ["email", "in_app"]  # JSON decoded
    assert (category.mandatory, category.created_at) == (True, expected.created_at)
    assert rows.get(Category, "key", "nope") is None
