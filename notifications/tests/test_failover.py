"""Urgent deliveries leave a failing provider within DELIVERY_URGENT_FAILOVER_SECONDS: a failure
past (failover - retry cap) seconds since the first one moves them to the next provider."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from notifications import services
from notifications.models import Delivery

pytestmark = pytest.mark.django_db

SENDGRID = "/sendgrid/v3/mail/send"


@pytest.fixture
def failing_sendgrid(settings, httpserver):
    settings.CELERY_QUEUE_PREFIX = "void-"  # nothing consumes these queues: we deliver in-process
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "sendgrid": {
            "BACKEND": "notifications.providers.sendgrid.SendGridEmailProvider",
            "OPTIONS": {"API_KEY": "SG.k", "API_URL": httpserver.url_for("/sendgrid/v3/")},
        },
        "mailgun": {
            "BACKEND": "notifications.providers.mailgun.MailgunEmailProvider",
            "OPTIONS": {
                "API_KEY": "key-test",
                "SENDER_DOMAIN": "mg.example.com",
                "API_URL": httpserver.url_for("/mailgun/v3"),
            },
        },
    }
    settings.EMAIL_PROVIDERS = ["sendgrid", "mailgun"]
    httpserver.expect_request(SENDGRID).respond_with_data("down", status=503)
    return httpserver


def failing_since(seconds: float, priority: str) -> str:
    outcome = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"email": "ops@example.com"}],
            "channels": ["email"],
            "priority": priority,
            "content": {"subject": "Disk", "body": "Full."},
        },
    )
    delivery_id = outcome.body["notifications"][0]["deliveries"][0]["id"]
    Delivery.objects.filter(id=delivery_id).update(
        provider_attempts=1, first_failure_at=timezone.now() - dt.timedelta(seconds=seconds)
    )
    return delivery_id


@pytest.mark.parametrize(
    ("failover", "retry_max", "since", "priority", "expected"),
    [
        (60, 15, 40, "urgent", "retry"),  # 40 s < 60 - 15: one more try on this provider
        (60, 15, 46, "urgent", "failover"),
        (60, 15, 46, "high", "failover"),
        (60, 15, 46, "normal", "retry"),  # only high and urgent sends are hurried
        (30, 10, 25, "urgent", "failover"),  # the settings, not a constant, set the cut-off
    ],
)
def test_an_urgent_delivery_fails_over_within_the_promise(
    failing_sendgrid, settings, failover, retry_max, since, priority, expected
):
    settings.DELIVERY_URGENT_FAILOVER_SECONDS = failover
    settings.DELIVERY_URGENT_RETRY_MAX_SECONDS = retry_max
    delivery_id = failing_since(since, priority)

    assert services.deliveries_attempt([delivery_id]) == {delivery_id: expected}
    delivery = Delivery.objects.get(id=delivery_id)
    assert delivery.provider_index == (1 if expected == "failover" else 0)
    if expected == "retry" and priority != "normal":
        wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
        assert wait <= retry_max
