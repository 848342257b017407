"""The rollups: counts per bucket and dimension from the events, maintained from the ingestion
watermark, idempotent, and run by the beat's task on a real worker."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from analytics import events, rollups, tasks
from analytics.models import (
    HISTOGRAM_SIZE,
    LATENCY_BOUNDS_MS,
    Event,
    FirstEngagement,
    Rollup,
)
from communication.models import User
from communication.schedules import SCHEDULES
from conftest import wait_for

# Committed data (another connection, a worker, the watermark's horizon); the data migrations'
# rows (categories) are restored after each test's truncation.
committed = pytest.mark.django_db(transaction=True, serialized_rollback=True)

# An hour well inside the current month's partition, whatever the day the suite runs.
NOW = timezone.now()
BASE = NOW.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=6)
CAMPAIGN, STEP = uuid.uuid4(), uuid.uuid4()


def at(hours: float = 0, minutes: float = 0) -> dt.datetime:
    return BASE + dt.timedelta(hours=hours, minutes=minutes)


def event(type_: str, when: dt.datetime, delivery=None, **fields) -> dict:
    fields.setdefault("channel", "email")
    fields.setdefault("provider", "sendgrid")
    fields.setdefault("category", "alerts")
    fields.setdefault("template", "welcome")
    return {"type": type_, "occurred_at": when, "delivery_id": delivery, **fields}


def wait_for_horizon() -> None:
    """Until every transaction that wrote an event has ended: another session's transaction
    still open (on this shared server) holds the run's horizon below our events."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(xid)::text::bigint, 0) FROM analytics_event")
        newest = cursor.fetchone()[0]

        def passed():
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            return cursor.fetchone()[0] > newest

        wait_for(passed, 60, interval=0.05, what="the snapshot horizon to pass our events")


def run() -> rollups.RunResult:
    wait_for_horizon()
    return rollups.rollup_run(wait=True)


def row(granularity: str = "hour", **dims) -> Rollup:
    dims.setdefault("channel", "email")
    dims.setdefault("provider", "sendgrid")
    dims.setdefault("category", "alerts")
    dims.setdefault("template", "welcome")
    dims.setdefault("variant", "")
    dims.setdefault("campaign_id", None)
    dims.setdefault("step_id", None)
    return Rollup.objects.get(granularity=granularity, **dims)


def everything() -> list[dict]:
    return list(
        Rollup.objects.order_by(
            "granularity", "bucket", "channel", "provider", "template", "variant", "campaign_id"
        ).values(*(f.name for f in Rollup._meta.concrete_fields if f.name != "id"))
    )


def hist(*values: float) -> list[int]:
    """The histogram of ``values`` (each bound inclusive)."""
    counts = [0] * HISTOGRAM_SIZE
    for value in values:
        counts[next((i for i, b in enumerate(LATENCY_BOUNDS_MS) if value <= b), -1)] += 1
    return counts


def one_send(delivery, when, **fields) -> list[dict]:
    return [
        event("queued", when, delivery, provider="", **fields),
        event(
            "sent",
            when + dt.timedelta(seconds=1),
            delivery,
            latency_ms=42.0,
            cost=Decimal("0.0004"),
            queue_wait_ms=8.0,
            api_to_provider_ms=120.0,
            **fields,
        ),
        event("delivered", when + dt.timedelta(seconds=3), delivery, **fields),
    ]


@committed
def test_single_sends_and_campaign_events_roll_up_per_dimension():
    a, b, c, sms = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    campaign = {"campaign_id": CAMPAIGN, "step_id": STEP, "category": "marketing"}
    events.record_many(
        [
            *one_send(a, at(0, 5)),
            *one_send(b, at(0, 10), variant="a", **campaign),
            *one_send(c, at(0, 20), variant="b", **campaign),
            event("opened", at(0, 30), b, variant="a", **campaign),
            event("clicked", at(0, 31), b, variant="a", **campaign),
            event("unsubscribed", at(1, 2), c, variant="b", **campaign),
            event("retry", at(0, 40), sms, channel="sms", provider="twilio", latency_ms=3000.0),
            event("failed", at(0, 41), sms, channel="sms", provider="twilio", latency_ms=7.0),
            event("suppressed", at(0, 42), uuid.uuid4()),
        ]
    )
    result = run()
    assert (result.events, result.hours) == (15, 2)
    assert result.days == len({at().date(), at(1).date()})

    single = row(bucket=at())
    assert (single.sent, single.delivered, single.failed, single.opened) == (1, 1, 0, 0)
    assert single.cost == Decimal("0.0004")
    assert (single.provider_calls, single.provider_errors, single.latency_sum_ms) == (1, 0, 42)
    assert single.latency_hist == hist(42.0)
    assert single.queue_wait_hist == hist(8.0)
    assert single.api_to_provider_hist == hist(120.0)

    variant_a = row(bucket=at(), variant="a", **campaign)
    assert (variant_a.sent, variant_a.delivered, variant_a.opened, variant_a.clicked) == (
        1,
        1,
        1,
        1,
    )
    assert (variant_a.opened_unique, variant_a.clicked_unique) == (1, 1)
    variant_b = row(bucket=at(), variant="b", **campaign)
    assert (variant_b.sent, variant_b.opened, variant_b.unsubscribed) == (1, 0, 0)
    # The unsubscribe counts in the hour it happened in, not the send's.
    assert row(bucket=at(1), variant="b", **campaign).unsubscribed == 1

    sms_row = row(bucket=at(), channel="sms", provider="twilio")
    assert (sms_row.sent, sms_row.failed) == (0, 1)
    assert (sms_row.provider_calls, sms_row.provider_errors) == (2, 2)
    assert sms_row.latency_hist == hist(3000.0, 7.0)
    # Queued and suppressed events count nothing: no row of their own.
    assert not Rollup.objects.filter(provider="", granularity="hour").exists()

    day = at().replace(hour=0)
    if at(1).date() == at().date():
        campaign_day = row("day", bucket=day, variant="b", **campaign)
        assert (campaign_day.sent, campaign_day.unsubscribed) == (1, 1)
    totals = Rollup.objects.filter(granularity="day")
    assert sum(r.sent for r in totals) == 3 and sum(r.delivered for r in totals) == 3
    assert sum(r.failed for r in totals) == 1


@committed
def test_running_again_or_rebuilding_the_range_changes_nothing():
    delivery = uuid.uuid4()
    events.record_many(
        [
            *one_send(delivery, at(0, 50)),
            event("opened", at(1, 10), delivery),
            event("opened", at(2, 10), delivery),
            event("opened", at(2, 11), delivery, machine=True),
            event("bounced", at(3), uuid.uuid4()),
        ]
    )
    first = run()
    assert first.events == 7
    before = everything()
    assert len(before) == 4 + (1 if at(3).date() == at().date() else 2)

    again = run()
    assert (again.events, again.hours) == (0, 0)
    assert everything() == before

    rollups.rollup_rebuild(at(-1), at(5))
    assert everything() == before
    call_command("analytics_rollup", "--rebuild", "--from", at(-24).isoformat())
    assert everything() == before
    assert FirstEngagement.objects.count() == 1


def test_a_rebuild_leaves_the_rollups_of_months_whose_events_are_gone(db, settings):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "events": 40}
    old = (NOW - dt.timedelta(days=200)).replace(minute=0, second=0, microsecond=0)
    Rollup.objects.create(
        granularity="hour",
        bucket=old,
        channel="email",
        sent=5,
        latency_hist=[0] * HISTOGRAM_SIZE,
        queue_wait_hist=[0] * HISTOGRAM_SIZE,
        api_to_provider_hist=[0] * HISTOGRAM_SIZE,
    )
    # The rollups outlive the events (ANALYTICS_ROLLUP_RETENTION_DAYS): an hour whose events
    # the retention dropped is not rebuilt from nothing.
    call_command(
        "analytics_rollup", "--rebuild", "--from", (old - dt.timedelta(days=1)).isoformat()
    )
    assert Rollup.objects.get(bucket=old).sent == 5


def test_the_rebuild_command_refuses_a_range_it_cannot_read(db):
    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("analytics_rollup", "--rebuild", "--from", "yesterday")
    with pytest.raises(CommandError, match="needs --from"):
        call_command("analytics_rollup", "--rebuild")
    with pytest.raises(CommandError, match="after --from"):
        call_command("analytics_rollup", "--rebuild", "--from", "2030-01-02", "--to", "2030-01-01")


@committed
def test_a_late_bounce_counts_in_its_own_hour_which_is_rebuilt():
    delivery, other = uuid.uuid4(), uuid.uuid4()
    sent_at = NOW - dt.timedelta(days=3)
    events.record_many([*one_send(delivery, sent_at), *one_send(other, sent_at)])
    run()
    send_hour = sent_at.replace(minute=0, second=0, microsecond=0)
    before = row(bucket=send_hour)
    assert (before.sent, before.bounced) == (2, 0)

    # Two days after the send, the provider's webhook tells us; it is recorded now.
    bounced_at = sent_at + dt.timedelta(days=2)
    events.record_many([event("bounced", bounced_at, delivery)])
    result = run()
    bounce_hour = bounced_at.replace(minute=0, second=0, microsecond=0)
    assert result.rebuilt == [bounce_hour] and result.events == 1
    late = row(bucket=bounce_hour)
    assert (late.sent, late.delivered, late.bounced) == (0, 0, 1)
    assert row(bucket=send_hour).bounced == 0 and row(bucket=send_hour).sent == 2
    assert row("day", bucket=bounce_hour.replace(hour=0)).bounced == 1
    assert row("day", bucket=send_hour.replace(hour=0)).bounced == 0


@committed
def test_unique_opens_count_the_first_human_one_in_its_hour_and_machines_apart():
    reader, clicker = uuid.uuid4(), uuid.uuid4()
    events.record_many(
        [
            *one_send(reader, at()),
            *one_send(clicker, at()),
            # A privacy proxy fetches the pixel at once: recorded, not a person's open.
            event("opened", at(0, 1), reader, machine=True),
            event("opened", at(1, 5), reader),
            event("opened", at(1, 30), reader),
            event("opened", at(2, 15), reader),
            event("clicked", at(0, 2), clicker, machine=True),  # a link scanner
            event("clicked", at(2, 20), clicker),
            event("clicked", at(2, 25), clicker),
        ]
    )
    run()
    first_hour, second_hour, third_hour = row(bucket=at()), row(bucket=at(1)), row(bucket=at(2))
    assert (first_hour.opened, first_hour.opened_unique, first_hour.machine_opened) == (0, 0, 1)
    assert (first_hour.clicked, first_hour.clicked_unique) == (0, 0)
    assert (second_hour.opened, second_hour.opened_unique) == (2, 1)
    assert (third_hour.opened, third_hour.opened_unique) == (1, 0)
    assert (third_hour.clicked, third_hour.clicked_unique) == (2, 1)
    days = Rollup.objects.filter(granularity="day")
    assert sum(d.opened for d in days) == 3 and sum(d.opened_unique for d in days) == 1
    assert sum(d.machine_opened for d in days) == 1

    # An open that happened earlier reaches us late (a phone that was offline): it becomes the
    # first, and the hour that held the old first loses its unique open.
    events.record_many([event("opened", at(0, 45), reader)])
    result = run()
    assert set(result.rebuilt) == {at(), at(1)}
    assert (row(bucket=at()).opened, row(bucket=at()).opened_unique) == (1, 1)
    assert (row(bucket=at(1)).opened, row(bucket=at(1)).opened_unique) == (2, 0)
    first = FirstEngagement.objects.get(delivery_id=reader, type="opened")
    assert first.occurred_at == at(0, 45)


@committed
def test_an_event_committed_after_a_run_began_is_counted_by_the_next_run():
    events.record_many(one_send(uuid.uuid4(), at()))
    wait_for_horizon()
    inserted, release, done = threading.Event(), threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def slow_writer():
        try:
            with transaction.atomic():
                events.record_many([event("bounced", at(0, 30), uuid.uuid4())])
                inserted.set()
                release.wait(30)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    try:
        assert inserted.wait(30)
        # The writer's transaction is open: this run must count what came before it, and
        # leave its watermark below the writer's event.
        first = rollups.rollup_run(wait=True)
        assert row(bucket=at()).sent == 1
        assert row(bucket=at()).bounced == 0
    finally:
        release.set()
        thread.join(30)
    assert done.is_set() and not failure
    assert first.events == 3
    second = run()
    assert second.events == 1
    assert row(bucket=at()).bounced == 1 and row(bucket=at()).sent == 1


@committed
def test_two_runs_at_once_count_each_event_once():
    deliveries = [uuid.uuid4() for _ in range(50)]
    events.record_many([e for d in deliveries for e in one_send(d, at(0, 5))])
    wait_for_horizon()
    barrier = threading.Barrier(2)
    results: list[rollups.RunResult] = []
    failure: list[BaseException] = []

    def one_run():
        try:
            barrier.wait(10)
            results.append(rollups.rollup_run(wait=True))
        except BaseException as exc:
            failure.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failure
    assert sorted(r.events for r in results) == [0, 150]
    assert row(bucket=at()).sent == 50 and row(bucket=at()).delivered == 50
    assert row("day", bucket=at().replace(hour=0)).sent == 50


@committed
def test_a_run_that_finds_another_running_steps_aside():
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_advisory_xact_lock({rollups.LOCK_SQL})")
        skipped = []
        thread = threading.Thread(
            target=lambda: (skipped.append(rollups.rollup_run().skipped), connection.close())
        )
        thread.start()
        thread.join(30)
    assert skipped == [True]


def test_the_beat_runs_the_rollup_every_minute_and_the_partitions_daily():
    assert SCHEDULES["analytics-rollup"] == (tasks.rollup.name, 60.0, "default")
    assert SCHEDULES["analytics-partitions"] == (tasks.maintain_partitions.name, 86400.0, "default")


@committed
def test_the_rollup_task_run_by_a_real_worker_produces_rollups(celery_worker):
    events.record_many([e for _ in range(3) for e in one_send(uuid.uuid4(), at(0, 15))])
    wait_for_horizon()
    task = tasks.rollup.apply_async(queue="default")
    wait_for(
        lambda: f"analytics.tasks.rollup[{task.id}] succeeded" in celery_worker.log.read_text(),
        30,
        what="the worker to run the rollup",
    )
    assert row(bucket=at()).sent == 3 and row(bucket=at()).delivered == 3
    assert "'events': 9" in celery_worker.log.read_text()


@committed
def test_a_real_send_then_a_run_counts_it_sent_and_delivered_in_its_hour(
    celery_worker, make_service_token
):
    User.objects.create(username="r1", external_id="r1", email="r1@example.com")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('billing')}")
    response = client.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "r1"}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Hi", "body": "Hello.", "html": "<p>Hello.</p>"},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    delivery_id = response.json()["notifications"][0]["deliveries"][0]["id"]
    sent = wait_for(
        lambda: Event.objects.filter(delivery_id=delivery_id, type="delivered").first(),
        30,
        what="the worker to deliver to the outbox",
    )
    run()
    hour = sent.occurred_at.replace(minute=0, second=0, microsecond=0)
    counted = Rollup.objects.get(granularity="hour", bucket=hour, channel="email")
    assert (counted.provider, counted.category) == ("outbox", "alerts")
    assert (counted.sent, counted.delivered, counted.failed) == (1, 1, 0)
    assert counted.provider_calls == 1 and sum(counted.latency_hist) == 1
    day = Rollup.objects.get(granularity="day", bucket=hour.replace(hour=0), channel="email")
    assert (day.sent, day.delivered) == (1, 1)
