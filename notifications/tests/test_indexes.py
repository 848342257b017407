"""The hot paths have an index to use: with sequential scans disabled, PostgreSQL plans each of
these queries on an index (on a table this small it would otherwise scan, which proves nothing)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from communication.models import User
from notifications import selectors
from notifications.models import Delivery, Notification

pytestmark = pytest.mark.django_db


def plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def assert_indexed(queryset, index: str):
    text = plan(queryset)
    assert "Seq Scan" not in text, text
    assert index in text, text


def test_sweep_queries_use_their_partial_indexes():
    now = timezone.now()
    assert_indexed(Delivery.objects.filter(status="sending", lease_until__lt=now), "delivery_lease")
    assert_indexed(
        Delivery.objects.filter(status="scheduled", scheduled_for__lte=now), "delivery_due"
    )
    stale = now - dt.timedelta(seconds=30)
    assert_indexed(
        Delivery.objects.filter(status="queued", updated_at__lt=stale).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=stale)
        ),
        "delivery_queued",
    )


def test_webhook_lookup_by_provider_message_id():
    assert_indexed(
        Delivery.objects.filter(provider="sendgrid", provider_message_id="abc"),
        "delivery_provider_id",
    )


def test_inbox_and_request_lists():
    user = User.objects.create(username="ix", external_id="ix")
    assert_indexed(selectors.inbox(user, unread_only=True)[:50], "notification_user_unread")
    assert_indexed(selectors.inbox(user)[:50], "notification_user")
    assert_indexed(
        Notification.objects.filter(user=user, read_at__isnull=True, dismissed_at__isnull=True),
        "notification_user",
    )
    assert_indexed(selectors.request_list(caller="svc")[:50], "request_caller_recent")
