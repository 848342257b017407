"""Recurring campaigns: their django-celery-beat ``PeriodicTask`` follows the campaign, the slot
is derived from the cron expression (beat passes none), and two ticks of one slot at once make
one run."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from django.db import connection
from django_celery_beat.models import PeriodicTask

from campaigns import tasks
from campaigns.models import CampaignRecipient, CampaignRun
from campaigns.services import runs
from campaigns.tests import factories
from communication.celery import queue
from communication.exceptions import APIError
from communication.schedules import SCHEDULES


@pytest.mark.django_db
def test_the_periodic_task_is_created_changed_and_removed_with_the_campaign(settings):
    settings.CELERY_QUEUE_PREFIX = "pfx-"
    campaign = factories.campaign(cron="0 9 * * 1", timezone="Europe/Paris")
    runs.campaign_arm(campaign)
    task = PeriodicTask.objects.get(name=f"campaign:{campaign.id}")
    campaign.refresh_from_db()
    assert campaign.periodic_task_id == task.id
    assert task.task == "campaigns.tasks.recurring_slot"
    assert json.loads(task.kwargs) == {"campaign_id": str(campaign.id)}
    assert task.queue == queue("bulk") == "pfx-bulk"
    assert task.args in ("[]", "", None)
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week, str(crontab.timezone)) == (
        "0",
        "9",
        "1",
        "Europe/Paris",
    )

    campaign.cron, campaign.timezone = "30 18 1 * *", "Asia/Tokyo"
    campaign.save()
    runs.campaign_arm(campaign)
    assert PeriodicTask.objects.filter(name=f"campaign:{campaign.id}").count() == 1
    task = PeriodicTask.objects.get(name=f"campaign:{campaign.id}")
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_month) == ("30", "18", "1")
    assert str(task.crontab.timezone) == "Asia/Tokyo"

    runs.campaign_disarm(campaign)
    assert not PeriodicTask.objects.filter(name=f"campaign:{campaign.id}").exists()
    campaign.refresh_from_db()
    assert campaign.periodic_task_id is None


@pytest.mark.django_db
def test_the_slot_is_the_latest_fire_time_in_the_campaigns_zone():
    campaign = factories.campaign(cron="0 9 * * *", timezone="Europe/Paris")
    # 07:59:59 UTC is 08:59:59 in Paris (winter): the slot is yesterday's 09:00.
    before = dt.datetime(2031, 1, 15, 7, 59, 59, tzinfo=dt.UTC)
    assert runs.cron_slot(campaign, now=before) == dt.datetime(2031, 1, 14, 8, 0, tzinfo=dt.UTC)
    # At 09:00:00 sharp and a bit later (a late beat): today's.
    for now in (before + dt.timedelta(seconds=1), before + dt.timedelta(minutes=7)):
        assert runs.cron_slot(campaign, now=now) == dt.datetime(2031, 1, 15, 8, tzinfo=dt.UTC)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_ticks_of_one_slot_at_once_create_one_run(settings):
    settings.CELERY_QUEUE_PREFIX = "engine-nobody-"
    factories.users("rec", 20)
    campaign = factories.campaign(
        segment=factories.segment_of("rec"), cron="*/5 * * * *", timezone="UTC"
    )
    now = dt.datetime.now(dt.UTC)
    barrier = threading.Barrier(4)
    results: list[object] = []
    errors: list[BaseException] = []

    def tick():
        try:
            barrier.wait()
            results.append(runs.recurring_slot(campaign.id, now=now))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len([r for r in results if r is not None]) == 1
    run = CampaignRun.objects.get(campaign=campaign)
    assert run.slot == runs.cron_slot(campaign, now=now) and run.total == 20
    assert CampaignRecipient.objects.filter(run=run).count() == 20
    campaign.refresh_from_db()
    assert campaign.status == "running"

    # The next slot is a new run, which sends again.
    later = runs.recurring_slot(campaign.id, now=now + dt.timedelta(minutes=5))
    assert later is not None and later.slot == run.slot + dt.timedelta(minutes=5)
    assert CampaignRecipient.objects.filter(run=later).count() == 20


@pytest.mark.django_db
def test_an_invalid_cron_expression_is_refused():
    campaign = factories.campaign(cron="61 9 * *", timezone="UTC")
    with pytest.raises(APIError) as caught:
        runs.campaign_arm(campaign)
    assert caught.value.code == "invalid_cron"
    assert not PeriodicTask.objects.filter(name=f"campaign:{campaign.id}").exists()


@pytest.mark.django_db
def test_the_beat_runs_due_on_the_bulk_queue_and_the_slot_task_takes_only_the_campaign(settings):
    settings.CELERY_QUEUE_PREFIX = "engine-nobody-"
    assert SCHEDULES["campaigns-due"] == (tasks.due.name, 5.0, "bulk")
    factories.users("tick", 2)
    campaign = factories.campaign(segment=factories.segment_of("tick"), cron="* * * * *")
    run_id = tasks.recurring_slot(str(campaign.id))  # as beat calls it: kwargs only
    run = CampaignRun.objects.get(id=run_id)
    assert run.total == 2 and run.slot.second == 0
    assert dt.timedelta(0) <= run.created_at - run.slot < dt.timedelta(minutes=1, seconds=5)
