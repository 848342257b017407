"""The event table's monthly partitions: created ahead, rows moved out of the default
partition, old ones detached, and the rollups' retention. (PostgreSQL's DDL is transactional:
each test's partitions go with its rolled-back transaction.)"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.core.management import call_command
from django.db import connection
from django_celery_beat.models import PeriodicTask

from analytics import events, partitions, rollups, tasks
from analytics.models import Event, FirstEngagement, Rollup

pytestmark = pytest.mark.django_db

# A month the migration made no partition for, so that its rows go to the default partition.
FUTURE = dt.datetime(2031, 5, 17, 12, tzinfo=dt.UTC)


def rows_in(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 (a test's fixed names)
        return cursor.fetchone()[0]


def exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return cursor.fetchone()[0]


def bounds(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s", [table]
        )
        return cursor.fetchone()[0]


def test_the_months_ahead_are_created_once_each_with_utc_month_bounds(settings):
    settings.ANALYTICS_PARTITIONS_AHEAD = 4
    result = partitions.partitions_ensure(now=FUTURE)
    assert result.created == [
        "analytics_event_p203105",
        "analytics_event_p203106",
        "analytics_event_p203107",
        "analytics_event_p203108",
        "analytics_event_p203109",
    ]
    assert result.moved == 0
    assert bounds("analytics_event_p203105") == (
        "FOR VALUES FROM ('2031-05-01 00:00:00+00') TO ('2031-06-01 00:00:00+00')"
    )
    # The last hour of December (UTC) is December's; the year turns in the months ahead.
    december = partitions.partitions_ensure(now=dt.datetime(2031, 12, 31, 23, tzinfo=dt.UTC))
    assert december.created == [
        "analytics_event_p203112",
        "analytics_event_p203201",
        "analytics_event_p203202",
        "analytics_event_p203203",
        "analytics_event_p203204",
    ]
    assert bounds("analytics_event_p203112") == (
        "FOR VALUES FROM ('2031-12-01 00:00:00+00') TO ('2032-01-01 00:00:00+00')"
    )
    again = partitions.partitions_ensure(now=FUTURE)
    assert again.created == [] and again.moved == 0

    # An event of one of those months goes to its partition, not to the default one.
    events.record_many([{"type": "sent", "occurred_at": FUTURE, "channel": "email"}])
    assert rows_in("analytics_event_p203105") == 1
    assert rows_in("analytics_event_default") == 0


def test_rows_waiting_in_the_default_partition_move_into_their_new_month(settings):
    settings.ANALYTICS_PARTITIONS_AHEAD = 0
    delivery = uuid.uuid4()
    events.record_many(
        [
            {"type": "sent", "occurred_at": FUTURE, "channel": "email", "delivery_id": delivery},
            {"type": "delivered", "occurred_at": FUTURE, "channel": "email"},
            # A month later: stays in the default partition (no partition is made for it).
            {"type": "sent", "occurred_at": FUTURE + dt.timedelta(days=31), "channel": "sms"},
        ]
    )
    ids = set(Event.objects.filter(occurred_at__lt=dt.datetime(2031, 6, 1, tzinfo=dt.UTC)).values_list("id", flat=True))  # fmt: skip
    assert rows_in("analytics_event_default") == 3

    result = partitions.partitions_ensure(now=FUTURE)
    assert result.created == ["analytics_event_p203105"] and result.moved == 2
    assert rows_in("analytics_event_p203105") == 2
    assert rows_in("analytics_event_default") == 1
    # The same rows, ids and all, read through the parent as before.
    moved = Event.objects.filter(occurred_at__month=5, occurred_at__year=2031)
    assert set(moved.values_list("id", flat=True)) == ids
    assert moved.get(type="sent").delivery_id == delivery
    # The new partition is a real one: its indexes came with the attach, and inserts land in it.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'analytics_event_p203105'"
        )
        assert cursor.fetchone()[0] == 9  # the key, the seven of the model, xid
    events.record_many([{"type": "opened", "occurred_at": FUTURE, "channel": "email"}])
    assert rows_in("analytics_event_p203105") == 3


def test_partitions_wholly_past_retention_are_detached_and_dropped(settings):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "events": 400}
    settings.ANALYTICS_ROLLUP_RETENTION_DAYS = 800
    settings.ANALYTICS_PARTITIONS_AHEAD = 1
    now = FUTURE
    partitions.partitions_ensure(now=now, since=now - dt.timedelta(days=500))
    # The cutoff (2030-04-12) falls in April 2030: that month is kept, March 2030 goes.
    old, kept = dt.datetime(2030, 3, 31, 23, tzinfo=dt.UTC), dt.datetime(2030, 4, 2, tzinfo=dt.UTC)
    events.record_many(
        [
            {"type": "sent", "occurred_at": old, "channel": "email"},
            {"type": "sent", "occurred_at": kept, "channel": "email"},
            {"type": "sent", "occurred_at": now, "channel": "email"},
        ]
    )
    first_old = FirstEngagement.objects.create(
        delivery_id=uuid.uuid4(), type="opened", occurred_at=old, event_id=1
    )
    FirstEngagement.objects.create(
        delivery_id=uuid.uuid4(), type="opened", occurred_at=kept, event_id=2
    )
    rollups.rollup_rebuild(old - dt.timedelta(hours=1), old + dt.timedelta(hours=1))
    rollups.rollup_rebuild(kept, kept + dt.timedelta(hours=1))
    # A rollup older than its own retention (800 days) goes too.
    ancient = now - dt.timedelta(days=801)
    events.record_many([{"type": "sent", "occurred_at": ancient, "channel": "email"}])
    rollups.rollup_rebuild(ancient, ancient + dt.timedelta(hours=1))
    assert Rollup.objects.filter(bucket__lt=now - dt.timedelta(days=800)).count() == 2

    result = partitions.partitions_retire(now=now)

    assert "analytics_event_p203003" in result.dropped
    assert "analytics_event_p203004" not in result.dropped
    assert not exists("analytics_event_p203003") and not exists("analytics_event_p202912")
    assert exists("analytics_event_p203004")
    assert not Event.objects.filter(occurred_at=old).exists()
    assert Event.objects.filter(occurred_at__in=[kept, now]).count() == 2
    # The ancient event sat in the default partition (no month of its own): deleted too.
    assert not Event.objects.filter(occurred_at=ancient).exists()
    assert not FirstEngagement.objects.filter(id=first_old.id).exists()
    assert FirstEngagement.objects.filter(occurred_at=kept).exists()
    assert result.rollups_deleted == 2
    assert not Rollup.objects.filter(bucket__lt=now - dt.timedelta(days=800)).exists()
    # Rollups outlive their events: March 2030's stay (800 days).
    assert Rollup.objects.filter(bucket__gte=old - dt.timedelta(hours=1), sent=1).exists()
    assert partitions.partitions_retire(now=now).dropped == []


def test_the_daily_task_keeps_the_months_ahead_and_setup_schedules_registers_it(settings):
    settings.ANALYTICS_PARTITIONS_AHEAD = 2
    result = tasks.maintain_partitions()
    assert set(result) == {"created", "moved", "dropped", "rollups_deleted"}
    names = set(partitions.partitions_list())
    month = partitions.month_start(dt.datetime.now(dt.UTC))
    for _ in range(3):
        assert partitions.partition_name(month) in names
        month = partitions.next_month(month)

    call_command("setup_schedules", verbosity=0)
    task = PeriodicTask.objects.get(name="analytics-partitions")
    assert (task.task, task.interval.every, json.loads(task.kwargs)) == (
        "analytics.tasks.maintain_partitions",
        86400,
        {},
    )
    assert PeriodicTask.objects.get(name="analytics-rollup").interval.every == 60
