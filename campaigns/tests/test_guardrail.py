"""The reputation guardrail: a campaign whose recent deliveries hard-bounce or draw complaints
too often pauses itself with the reason; soft bounces and other senders' bounces do not count."""

from __future__ import annotations

import pytest
from django.utils import timezone

from analytics import events
from campaigns.services import fanout, runs
from campaigns.services.guardrail import guardrail_check, guardrail_rates
from campaigns.tests import factories
from notifications.models import Delivery
from notifications.services.delivery_events import delivery_event
from notifications.services.send import notification_send

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _small_window(settings):
    settings.CELERY_QUEUE_PREFIX = "engine-nobody-"
    settings.CAMPAIGN_BATCH_SIZE = 100
    settings.CAMPAIGN_GUARDRAIL_WINDOW = 50
    settings.CAMPAIGN_GUARDRAIL_MIN = 20


def _sent_campaign(n: int):
    """A running campaign with ``n`` deliveries sent and one still queued (so it runs on)."""
    factories.users("gr", n + 1)
    campaign = factories.campaign(segment=factories.segment_of("gr"))
    run = runs.run_start(campaign, timezone.now())
    assert run is not None
    fanout.fanout_batch(run.id, campaign.steps.get().id)
    deliveries = list(
        Delivery.objects.select_related("notification__request")
        .filter(notification__request__run_id=run.id)
        .order_by("id")
    )[:n]
    # One outcome time for all: the window's order is then the deliveries' ids'.
    Delivery.objects.filter(id__in=[d.id for d in deliveries]).update(
        status="sent", updated_at=timezone.now()
    )
    return campaign, deliveries


def _bounce(deliveries, kind="hard"):
    events.record_many([delivery_event(d, "bounced", data={"bounce": kind}) for d in deliveries])


def test_too_few_outcomes_never_pause():
    campaign, deliveries = _sent_campaign(19)
    _bounce(deliveries[:10])
    assert guardrail_rates(campaign) == (19, 10, 0)
    assert not guardrail_check(campaign)


def test_a_hard_bounce_rate_over_the_limit_pauses_with_the_reason(settings):
    campaign, deliveries = _sent_campaign(60)
    _bounce(deliveries[:5])  # older than the last 50: not counted
    _bounce(deliveries[-2:])  # 2 of the last 50: 4 %, not over
    _bounce(deliveries[-12:-2], kind="soft")
    assert guardrail_rates(campaign) == (50, 2, 0)
    assert not guardrail_check(campaign)

    # Bounces of other senders' deliveries do not count.
    notification_send(
        caller="billing",
        payload={
            "recipients": [{"email": f"t{i}@example.com"} for i in range(5)],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Receipt", "body": "Thanks."},
        },
    )
    others = list(
        Delivery.objects.select_related("notification__request").filter(
            notification__request__caller="billing"
        )
    )
    Delivery.objects.filter(id__in=[d.id for d in others]).update(status="sent")
    _bounce(others)
    assert runs.campaigns_due()["paused"] == 0

    _bounce(deliveries[-13:-12])  # 3 of 50: 6 %
    assert runs.campaigns_due()["paused"] == 1
    campaign.refresh_from_db()
    assert campaign.status == "paused"
    assert campaign.pause_reason == "hard bounce rate 6.0 % over the last 50 deliveries"
    assert set(
        Delivery.objects.filter(id__in=[d.id for d in others]).values_list("status", flat=True)
    ) == {"sent"}


def test_complaints_pause_too():
    campaign, deliveries = _sent_campaign(30)
    events.record(**delivery_event(deliveries[0], "complained"))
    assert guardrail_check(campaign)
    campaign.refresh_from_db()
    assert campaign.pause_reason == "complaint rate 3.33 % over the last 30 deliveries"
