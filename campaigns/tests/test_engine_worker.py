"""The campaign engine with real Celery workers and a provider played by a local HTTP server
(SendGrid's API): pause and resume within one batch, a worker killed mid-campaign, and a
transactional send overtaking a running campaign. The bulk queue has a worker of its own, as
``serve`` runs it; the module's tests share their workers (the killed one is replaced)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from django.core.cache import cache
from django.utils import timezone
from werkzeug import Response

from campaigns.models import Campaign, CampaignRecipient
from campaigns.progress import campaign_progress
from campaigns.services import fanout, runs
from campaigns.services.status import campaign_transition
from campaigns.tests import factories
from communication.processes import worker_argv
from conftest import ROOT, _stop_all, process_env, wait_for
from notifications.models import Delivery
from notifications.services import deliveries_sweep
from notifications.services.send import notification_send

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SENDGRID = "/sendgrid/v3/mail/send"
QUEUES = ("realtime", "transactional", "bulk", "default")
BULK = ("bulk",)
REST = ("realtime", "transactional", "default")


class FakeSendGrid:
    """Records, call by call, the addresses each call was for (a batch call carries several)."""

    def __init__(self, httpserver, delay: float = 0.0):
        self.lock = threading.Lock()
        self.calls: list[list[str]] = []
        self.delay = delay
        httpserver.expect_request(SENDGRID).respond_with_handler(self._handle)

    def _handle(self, request):
        body = json.loads(request.data)
        to = [t["email"] for p in body.get("personalizations", []) for t in p.get("to", [])]
        if self.delay:
            time.sleep(self.delay * len(to))
        with self.lock:
            self.calls.append(to)
        return Response("", status=202)

    def per_address(self) -> Counter:
        with self.lock:
            return Counter(a for call in self.calls for a in call)

    def order(self) -> list[str]:
        with self.lock:
            return [a for call in self.calls for a in call]


@pytest.fixture(scope="module")
def _engine_workers(django_db_setup, make_httpserver, tmp_path_factory):
    """The module's workers, on queues of its own (prefix), with the fake provider: started when
    a test first asks for a queue set and shared by the tests after it (a worker starts in
    seconds), stopped at the module's end. The test process shares their queue prefix and cache
    (the fan-out's markers)."""
    prefix = f"eng-{uuid.uuid4().hex[:6]}-"
    cache_prefix = f"eng-{uuid.uuid4().hex[:8]}"
    base = make_httpserver.url_for("/").rstrip("/")
    env = {
        "EMAIL_PROVIDERS": "sendgrid",
        "SENDGRID_API_KEY": "SG.test",
        "SENDGRID_API_URL": f"{base}/sendgrid/v3/",
        "CAMPAIGN_BATCH_SIZE": "20",
        "DELIVERY_ENQUEUE_LINGER_MS": "0",
        "DELIVERY_LEASE_SECONDS": "3",
        "CACHE_KEY_PREFIX": cache_prefix,
        "CELERY_QUEUE_PREFIX": prefix,
    }
    logs = tmp_path_factory.mktemp("engine")
    procs: list[tuple[tuple[str, ...], subprocess.Popen]] = []

    def start(queues=QUEUES, **extra) -> subprocess.Popen:
        """A running worker on exactly ``queues`` (one already started, when alive and with no
        ``extra`` environment), else a new one."""
        queues = tuple(queues)
        for started, proc in procs:
            if started == queues and proc.poll() is None and not extra:
                return proc
        log = logs / f"worker-{len(procs)}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                worker_argv(
                    queues=",".join(prefix + q for q in queues),
                    name=f"{prefix}{len(procs)}@%h",
                    pool="solo",
                ),
                cwd=ROOT,
                env=process_env(**{**env, **extra}),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        procs.append((queues, proc))
        wait_for(lambda: "ready" in Path(log).read_text() or proc.poll() is not None, 60)
        assert proc.poll() is None, Path(log).read_text()[-3000:]
        return proc

    start.prefix = prefix  # type: ignore[attr-defined]
    start.cache_prefix = cache_prefix  # type: ignore[attr-defined]
    yield start
    _stop_all([proc for _queues, proc in procs])


@pytest.fixture
def engine(_engine_workers, httpserver, settings):
    """Starts (or reuses) the module's workers; this test's process shares their queue prefix
    and cache."""
    settings.CELERY_QUEUE_PREFIX = _engine_workers.prefix
    settings.CAMPAIGN_BATCH_SIZE = 20
    # The sweep this test plays publishes again what a killed worker committed but never
    # published once it has waited this long (the deployment's default is minutes).
    settings.DELIVERY_REPUBLISH_SECONDS = 5
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": _engine_workers.cache_prefix},
    }
    yield _engine_workers
    # The workers outlive the test: what they are still sending must reach this test's provider,
    # never the next test's.
    wait_for(
        lambda: not Delivery.objects.filter(status="sending").exists(),
        30,
        what="the workers' sends to end",
    )


def _ledger(campaign) -> Counter:
    return Counter(
        CampaignRecipient.objects.filter(run__campaign=campaign).values_list("state", flat=True)
    )


def _sending(campaign) -> int:
    return Delivery.objects.filter(
        notification__request__campaign_id=campaign.id, status="sending"
    ).count()


def _waiting(campaign) -> int:
    return Delivery.objects.filter(
        notification__request__campaign_id=campaign.id,
        status__in=("scheduled", "queued", "sending"),
    ).count()


def _settle(campaign, timeout=60) -> None:
    """Plays the beat (``due``, the deliveries' sweep) until the campaign is done."""

    def done():
        deliveries_sweep()
        runs.campaigns_due()
        campaign.refresh_from_db()
        return campaign.status == "completed"

    wait_for(done, timeout, interval=0.3, what="the campaign to complete")


def test_a_transactional_send_overtakes_a_running_campaign(engine, httpserver):
    provider = FakeSendGrid(httpserver)
    engine(BULK)
    engine(REST)
    factories.users("big", 3000)
    campaign = factories.campaign(segment=factories.segment_of("big"))
    runs.run_start(campaign, timezone.now())
    wait_for(lambda: len(provider.order()) >= 50, 60, what="the campaign to be under way")

    notification_send(
        caller="billing",
        payload={
            "recipients": [{"email": "receipt@example.com"}],
            "category": "transactional",
            "channels": ["email"],
            "content": {"subject": "Receipt", "body": "Thanks."},
        },
    )
    wait_for(lambda: "receipt@example.com" in provider.order(), 30, what="the transactional send")
    before = provider.order().index("receipt@example.com")
    assert before < 1500, f"{before} campaign messages went before it"
    campaign_transition(Campaign.objects.get(id=campaign.id), "cancelled")
    fanout.campaign_stop_sending(campaign, cancel=True)


def test_pause_stops_within_one_batch_and_resume_serves_each_recipient_once(engine, httpserver):
    provider = FakeSendGrid(httpserver, delay=0.01)
    engine(BULK)
    engine(REST)
    factories.users("pz", 200)
    campaign = factories.campaign(segment=factories.segment_of("pz"))
    runs.run_start(campaign, timezone.now())
    wait_for(lambda: len(provider.order()) >= 40, 60, what="the campaign to be under way")

    campaign_transition(Campaign.objects.get(id=campaign.id), "paused")
    fanout.campaign_stop_sending(campaign, cancel=False)
    # Held from here: no worker claims another of its deliveries. Read in this order, a
    # delivery handed over meanwhile is counted twice, never missed.
    in_flight = _sending(campaign)
    sent_at_pause = len(provider.order())
    wait_for(lambda: _sending(campaign) == 0, 30, what="the claimed deliveries to go")
    held = _waiting(campaign)
    assert len(provider.order()) <= sent_at_pause + in_flight, "only what was claimed went"
    paused = _ledger(campaign)
    assert paused["pending"] > 0, "the fan-out stopped"
    assert len(provider.order()) + held == paused["queued"] < 200

    campaign = Campaign.objects.get(id=campaign.id)
    campaign_transition(campaign, "running")
    fanout.fanout_kick(campaign)
    _settle(campaign)
    served = provider.per_address()
    assert len(served) == 200 and set(served.values()) == {1}, "each recipient served once"
    assert _ledger(campaign) == {"queued": 200}


def test_a_worker_killed_mid_campaign_sends_each_once_or_flags_it(engine, httpserver):
    provider = FakeSendGrid(httpserver, delay=0.02)
    victim = engine(BULK)  # the one sending the campaign
    engine(REST)
    factories.users("kill", 120)
    campaign = factories.campaign(segment=factories.segment_of("kill"))
    run = runs.run_start(campaign, timezone.now())
    assert run is not None
    wait_for(lambda: len(provider.order()) >= 30, 60, what="the campaign to be under way")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    engine(BULK)  # a new one: the victim is dead
    # The dead chain's marker would expire after FANOUT_STALL_SECONDS; expire it now.
    cache.delete(fanout._marker(run.id, campaign.steps.get().id))
    _settle(campaign, timeout=90)

    served = provider.per_address()
    deliveries = {
        d.address: d
        for d in Delivery.objects.filter(notification__request__campaign_id=campaign.id)
    }
    assert len(deliveries) == 120 and _ledger(campaign) == {"queued": 120}
    for address, delivery in deliveries.items():
        calls = served[address]
        # Twice only for a delivery whose lease expired mid-send: flagged by its attempts.
        assert calls == 1 or (calls == 2 and delivery.attempts >= 2), (address, calls)
        assert delivery.status == "sent"
    twice = sum(1 for calls in served.values() if calls == 2)
    flagged = campaign_progress(campaign)["possibly_duplicated"]
    assert flagged == sum(1 for d in deliveries.values() if d.attempts >= 2) >= twice
