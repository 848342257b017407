"""The campaign engine in this process, on real PostgreSQL: the audience written as the ledger
in one statement, a run per slot, a sequence whose conditions read the previous step's events,
local-time and send-window scheduling (with an injected "now"), progress and cancel.

Tasks the engine enqueues go to queues nobody consumes here (the fan-out is called directly);
the worker tests are in ``test_engine_worker.py``."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics import events
from campaigns import audiences
from campaigns.models import Campaign, CampaignRecipient, CampaignRun
from campaigns.progress import campaign_progress
from campaigns.services import fanout, runs
from campaigns.services.status import campaign_transition
from campaigns.tests import factories
from communication.models import User
from notifications.models import Delivery, NotificationRequest
from notifications.services.delivery import deliveries_attempt
from notifications.services.delivery_events import delivery_event

pytestmark = pytest.mark.django_db

State = CampaignRecipient.State


@pytest.fixture(autouse=True)
def _nobody_consumes(settings):
    settings.CELERY_QUEUE_PREFIX = "engine-nobody-"
    settings.CAMPAIGN_BATCH_SIZE = 3


def _drain(run: CampaignRun, step, *, now=None) -> list[fanout.Batch]:
    """Fans out ``step`` batch after batch as the task chain would, then finishes it."""
    batches = []
    while True:
        batch = fanout.fanout_batch(run.id, step.id, now=now)
        batches.append(batch)
        if batch.outcome != "more":
            break
    if batches[-1].outcome == "done":
        fanout.fanout_finished(run.id)
    return batches


def _rows(run, step) -> dict[str, str]:
    return dict(CampaignRecipient.objects.filter(run=run, step=step).values_list("key", "state"))


def test_the_audience_is_written_with_one_statement(django_assert_num_queries):
    factories.users("seg", 7)
    factories.users("other", 2)
    campaign = factories.campaign(segment=factories.segment_of("seg"))
    step = campaign.steps.get()
    run = CampaignRun.objects.create(campaign=campaign, slot=timezone.now())
    assert audiences.audience_count(campaign) == 7
    with django_assert_num_queries(1):
        assert audiences.audience_materialise(campaign, run, step, due_at=run.slot) == 7
    # A repeat (a retried task) writes nothing.
    assert audiences.audience_materialise(campaign, run, step, due_at=run.slot) == 0
    rows = CampaignRecipient.objects.filter(run=run)
    assert sorted(rows.values_list("key", flat=True)) == [f"seg{i}" for i in range(7)]
    assert {(r.state, r.email, r.user.external_id == r.key) for r in rows} == {
        ("pending", "", True)
    }


def test_a_static_list_keeps_its_members_data_and_addresses():
    user = factories.users("st", 1)[0]
    static = factories.static_list(
        "vip",
        [
            {"key": "st0", "user": user, "data": {"code": "A1"}},
            {"key": "raw@example.com", "email": "raw@example.com", "data": {"code": "B2"}},
        ],
    )
    campaign = factories.campaign(
        static=static, steps=[{"content": {"subject": "Code {{ code }}", "body": "{{ code }}"}}]
    )
    assert audiences.audience_count(campaign) == 2
    run = runs.run_start(campaign, timezone.now())
    assert run is not None and run.total == 2
    _drain(run, campaign.steps.get())
    by_key = {r.key: r for r in CampaignRecipient.objects.filter(run=run).select_related(None)}
    assert by_key["raw@example.com"].data == {"code": "B2"}
    assert {r.state for r in by_key.values()} == {"queued"}
    deliveries = Delivery.objects.filter(notification__request__run_id=run.id)
    sent = deliveries.values_list("address", "notification__data")  # (encrypted: read back)
    assert sorted((address, data["code"]) for address, data in sent) == [
        ("raw@example.com", "B2"),
        ("st0@example.com", "A1"),
    ]


def test_a_slot_gets_one_run_and_the_campaign_starts_running():
    factories.users("once", 2)
    campaign = factories.campaign(segment=factories.segment_of("once"))
    slot = timezone.now().replace(microsecond=0)
    first = runs.run_start(campaign, slot)
    assert first is not None and first.total == 2
    assert runs.run_start(campaign, slot) is None
    campaign.refresh_from_db()
    assert campaign.status == "running" and campaign.started_at is not None
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1
    assert CampaignRecipient.objects.filter(run=first).count() == 2


def test_due_starts_one_off_campaigns_whose_time_has_come():
    factories.users("due", 1)
    now = timezone.now()
    later = factories.campaign(segment=factories.segment_of("due"), send_at=now + factories.DAY)
    ready = factories.campaign(segment=factories.segment_of("due"), send_at=now)
    draft = factories.campaign(segment=factories.segment_of("due"), status="draft")
    assert runs.campaigns_due(now=now + dt.timedelta(seconds=1))["started"] == 1
    assert [r.slot for r in CampaignRun.objects.filter(campaign=ready)] == [now]
    assert not CampaignRun.objects.filter(campaign__in=[later, draft]).exists()


def test_a_sequence_sends_step_two_only_to_those_who_did_not_open_step_one():
    people = factories.users("seq", 5)
    campaign = factories.campaign(
        segment=factories.segment_of("seq"),
        steps=[
            {},
            {"delay": factories.DAY, "condition": {"previous": "not_opened"}},
            {"delay": factories.DAY, "condition": {"previous": "clicked"}},
        ],
    )
    one, two, three = campaign.steps.order_by("position")
    start = timezone.now()
    run = runs.run_start(campaign, start)
    assert run is not None
    _drain(run, one)
    assert set(_rows(run, one).values()) == {"queued"}
    # Step 2 is written when step 1's fan-out is done, due a day after each step-1 send.
    assert set(_rows(run, two).values()) == {"pending"}
    assert fanout.fanout_batch(run.id, two.id).outcome == "done", "not due yet"

    # seq0 and seq1 open step 1 (a click is an open too); seq4's open is a machine's.
    step_one = {
        d.notification.user.external_id: d
        for d in Delivery.objects.select_related(
            "notification__request", "notification__user"
        ).filter(notification__request__step_id=one.id)
    }
    events.record(**delivery_event(step_one["seq0"], "opened"))
    events.record(**delivery_event(step_one["seq1"], "clicked"))
    events.record(**delivery_event(step_one["seq4"], "opened", machine=True))

    _drain(run, two, now=start + factories.DAY + dt.timedelta(minutes=1))
    assert _rows(run, two) == {
        "seq0": "skipped",
        "seq1": "skipped",
        "seq2": "queued",
        "seq3": "queued",
        "seq4": "queued",
    }
    step_two = {
        d.notification.user.external_id: d
        for d in Delivery.objects.select_related(
            "notification__request", "notification__user"
        ).filter(notification__request__step_id=two.id)
    }
    assert sorted(step_two) == ["seq2", "seq3", "seq4"]
    request = NotificationRequest.objects.get(step_id=two.id)
    assert (request.caller, request.priority, request.run_id, request.campaign_id) == (
        f"campaign:{campaign.id}",
        "low",
        run.id,
        campaign.id,
    )

    # Step 3 goes to those of step 2 who clicked it.
    events.record(**delivery_event(step_two["seq3"], "clicked"))
    assert set(_rows(run, three)) == {"seq2", "seq3", "seq4"}
    _drain(run, three, now=start + 2 * factories.DAY + dt.timedelta(minutes=2))
    assert _rows(run, three) == {"seq2": "skipped", "seq3": "queued", "seq4": "skipped"}
    run.refresh_from_db()
    assert run.status == "running", "until its deliveries are handed over"
    Delivery.objects.filter(notification__request__run_id=run.id).update(status="sent")
    runs.campaigns_due()
    run.refresh_from_db()
    campaign.refresh_from_db()
    assert run.status == "completed" and campaign.status == "completed"
    assert [u.external_id for u in people if u.external_id == "seq3"] == ["seq3"]


def test_an_attribute_condition_is_evaluated_in_sql():
    factories.users("attr", 3)
    User.objects.filter(external_id="attr1").update(attributes={"cohort": "attr", "plan": "pro"})
    campaign = factories.campaign(
        segment=factories.segment_of("attr"),
        steps=[{"condition": {"field": "attributes.plan", "op": "eq", "value": "pro"}}],
    )
    run = runs.run_start(campaign, timezone.now())
    assert run is not None
    _drain(run, campaign.steps.get())
    assert _rows(run, campaign.steps.get()) == {
        "attr0": "skipped",
        "attr1": "queued",
        "attr2": "skipped",
    }


ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo")


def test_local_time_sends_land_at_nine_in_each_zone():
    # "now" is 05:00 UTC some days ahead: 07:00 in Paris, 01:00 in New York, 14:00 in Tokyo.
    now = (timezone.now() + 3 * factories.DAY).replace(hour=5, minute=0, second=0, microsecond=0)
    for zone in ZONES:
        factories.users(f"lt{zone[:4].lower()}", 1, timezone=zone)
        User.objects.filter(username=f"lt{zone[:4].lower()}0").update(attributes={"cohort": "lt"})
    factories.users("lt", 1)  # no zone of its own: the campaign's
    campaign = factories.campaign(
        segment=factories.segment_of("lt"),
        local_time=dt.time(9, 0),
        timezone="America/Sao_Paulo",
    )
    run = runs.run_start(campaign, now)
    assert run is not None
    _drain(run, campaign.steps.get(), now=now)
    landed = {}
    for d in Delivery.objects.select_related("notification__user").filter(
        notification__request__run_id=run.id
    ):
        zone = d.notification.user.timezone or campaign.timezone
        local = d.scheduled_for.astimezone(zoneinfo.ZoneInfo(zone))
        landed[zone] = (d.status, local.strftime("%H:%M"), (local.date() - now.date()).days)
    assert landed == {
        "Europe/Paris": ("scheduled", "09:00", 0),
        "America/New_York": ("scheduled", "09:00", 0),
        # 09:00 had passed in Tokyo when the run started: the next day's.
        "Asia/Tokyo": ("scheduled", "09:00", 1),
        "America/Sao_Paulo": ("scheduled", "09:00", 0),
    }


def test_the_send_window_moves_a_send_to_its_next_start():
    campaign = Campaign(
        timezone="UTC", window_start=dt.time(8, 0), window_end=dt.time(20, 0), local_time=None
    )
    day = dt.datetime(2031, 3, 10, tzinfo=dt.UTC)
    at = day.replace(hour=22)  # 07:00 in Tokyo: before the window opens there
    assert fanout.send_time(campaign, due=at, zone_name="Asia/Tokyo", now=at) == day.replace(
        hour=23
    )
    # 23:00 in Paris: after it closed, the next day's start.
    assert fanout.send_time(campaign, due=at, zone_name="Europe/Paris", now=at) == (
        day + factories.DAY
    ).replace(hour=7)
    noon = day.replace(hour=12)
    assert fanout.send_time(campaign, due=noon, zone_name="Europe/Paris", now=noon) is None


def test_progress_counts_every_status_in_two_queries():
    factories.users("prog", 4)
    campaign = factories.campaign(segment=factories.segment_of("prog"))
    run = runs.run_start(campaign, timezone.now())
    assert run is not None
    fanout.fanout_batch(run.id, campaign.steps.get().id)  # 3 of 4 (batch of 3)
    Delivery.objects.filter(
        id=Delivery.objects.filter(notification__request__run_id=run.id).values("id")[:1]
    ).update(status="sent")
    with CaptureQueriesContext(connection) as ctx:
        progress = campaign_progress(campaign)
    assert len(ctx.captured_queries) == 2
    assert set(Delivery.Status.values) <= set(progress["by_status"])
    assert progress["by_status"]["queued"] == 2 and progress["by_status"]["sent"] == 1
    assert progress["total"] == 4 and progress["percent"] == 25.0
    assert progress["by_state"]["pending"] == 1 and progress["by_state"]["queued"] == 3
    assert progress["per_second"] > 0 and progress["eta_seconds"] is not None


def test_cancel_cancels_pending_rows_and_queued_deliveries():
    factories.users("stop", 5)
    campaign = factories.campaign(segment=factories.segment_of("stop"))
    run = runs.run_start(campaign, timezone.now())
    assert run is not None
    step = campaign.steps.get()
    assert fanout.fanout_batch(run.id, step.id).queued == 3
    campaign_transition(campaign, "paused")
    assert fanout.fanout_batch(run.id, step.id).outcome == "stopped"
    assert set(_rows(run, step).values()) == {"queued", "pending"}, "pause leaves rows pending"
    campaign_transition(campaign, "cancelled")
    fanout.campaign_stop_sending(campaign, cancel=True)
    states = sorted(_rows(run, step).values())
    assert states == ["cancelled", "cancelled", "queued", "queued", "queued"]
    assert set(
        Delivery.objects.filter(notification__request__run_id=run.id).values_list(
            "status", flat=True
        )
    ) == {"cancelled"}
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_a_paused_campaigns_written_deliveries_wait_until_it_resumes():
    factories.users("hold", 3)
    campaign = factories.campaign(segment=factories.segment_of("hold"))
    run = runs.run_start(campaign, timezone.now())
    assert run is not None
    step = campaign.steps.get()
    assert fanout.fanout_batch(run.id, step.id).queued == 3
    ids = list(
        Delivery.objects.filter(notification__request__run_id=run.id).values_list("id", flat=True)
    )
    campaign_transition(campaign, "paused")
    fanout.campaign_stop_sending(campaign, cancel=False)
    # A worker given the ids (its task was already queued) claims none of them.
    assert set(deliveries_attempt(ids).values()) == {"not_claimed"}
    assert set(Delivery.objects.filter(id__in=ids).values_list("status", flat=True)) == {"queued"}

    campaign_transition(campaign, "running")
    fanout.fanout_kick(campaign)
    assert set(deliveries_attempt(ids).values()) == {"sent"}


def test_backpressure_waits_while_two_batches_of_deliveries_are_queued():
    factories.users("bp", 12)
    campaign = factories.campaign(segment=factories.segment_of("bp"))
    run = runs.run_start(campaign, timezone.now())
    assert run is not None
    step = campaign.steps.get()
    outcomes = [fanout.fanout_batch(run.id, step.id).outcome for _ in range(3)]
    # 9 deliveries queued, none handed over (nobody consumes here): more than 2 batches of 3.
    assert outcomes == ["more", "more", "more"]
    assert fanout.fanout_batch(run.id, step.id).outcome == "wait"
    assert _ledger_pending(run) == 3
    Delivery.objects.filter(notification__request__run_id=run.id).update(status="sent")
    assert fanout.fanout_batch(run.id, step.id).outcome == "more"
    assert _ledger_pending(run) == 0


def _ledger_pending(run) -> int:
    return CampaignRecipient.objects.filter(run=run, state=State.PENDING).count()


def test_a_batch_costs_the_same_queries_whatever_its_size(settings):
    factories.users("qc", 40)
    campaign = factories.campaign(segment=factories.segment_of("qc"))
    run = runs.run_start(campaign, timezone.now())
    assert run is not None
    step = campaign.steps.get()
    fanout.fanout_batch(run.id, step.id)  # the first batch also creates the run's request
    Delivery.objects.update(status="sent")
    counts = []
    for size in (3, 30):
        settings.CAMPAIGN_BATCH_SIZE = size
        with CaptureQueriesContext(connection) as ctx:
            assert fanout.fanout_batch(run.id, step.id).queued == size
        counts.append(len(ctx.captured_queries))
        Delivery.objects.update(status="sent")
    assert counts[0] == counts[1] == 14, counts
