"""The pipeline with real providers (anymail, twilio) talking to a local server that plays them,
and real worker processes: retries, failover, circuit breaker, a worker killed mid-send, rate
limits, ambiguous SMS."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
from django.utils import timezone
from werkzeug import Response

from analytics.models import Event
from communication.models import User
from conftest import wait_for
from notifications import services
from notifications.models import Delivery
from notifications.providers.registry import provider_breaker

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SENDGRID = "/sendgrid/v3/mail/send"
MAILGUN = "/mailgun/v3/mg.example.com/messages"


def provider_env(server, **extra) -> dict:
    base = server.url_for("/").rstrip("/")
    env = {
        "EMAIL_PROVIDERS": "sendgrid,mailgun",
        "SENDGRID_API_KEY": "SG.test",
        "SENDGRID_API_URL": f"{base}/sendgrid/v3/",
        "MAILGUN_API_KEY": "key-test",
        "MAILGUN_SENDER_DOMAIN": "mg.example.com",
        "MAILGUN_API_URL": f"{base}/mailgun/v3",
        "DELIVERY_RETRY_BASE_SECONDS": "0.2",
        "DELIVERY_MAX_ATTEMPTS_PER_PROVIDER": "3",
        "PROVIDER_BREAKER_THRESHOLD": "3",
        "PROVIDER_BREAKER_RESET_SECONDS": "2",
        "DELIVERY_LEASE_SECONDS": "3",
    }
    env.update({k: str(v) for k, v in extra.items()})
    # Breakers and rate buckets live in Redis: each worker starts from a clean slate.
    env["CACHE_KEY_PREFIX"] = f"{env.get('CACHE_KEY_PREFIX', 'p')}-{uuid.uuid4().hex[:8]}"
    return env


def calls(server, path) -> list:
    return [req for req, _ in server.log if req.path == path]


def mailgun_ok(request):
    body = f'{{"id": "<m-{time.monotonic_ns()}@mg.example.com>", "message": "Queued"}}'
    return Response(body, content_type="application/json")


def send_email(sender, user_id: str, priority: str = "normal") -> str:
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": user_id}],
            "category": "alerts",
            "channels": ["email"],
            "priority": priority,
            "content": {"subject": "Disk", "body": "Almost full."},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()["notifications"][0]["deliveries"][0]["id"]


def finished(delivery_id) -> Delivery | None:
    d = Delivery.objects.filter(id=delivery_id).first()
    return d if d and d.status in ("sent", "delivered", "failed", "ambiguous") else None


@pytest.fixture
def email_user(db):
    return User.objects.create(
        username="p1", external_id="p1", email="p1@example.com", phone="+33612345678"
    )


def test_retries_then_failover_then_breaker_opens_and_closes(
    start_worker, httpserver, settings, sender, email_user
):
    settings.CELERY_QUEUE_PREFIX = "failover-"
    env = provider_env(httpserver, CACHE_KEY_PREFIX="failover")
    start_worker(env, "failover-")
    # The breaker lives in Redis: read the worker's (its key prefix, its reset time).
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": env["CACHE_KEY_PREFIX"]},
    }
    settings.PROVIDER_BREAKER_THRESHOLD = int(env["PROVIDER_BREAKER_THRESHOLD"])
    settings.PROVIDER_BREAKER_RESET_SECONDS = int(env["PROVIDER_BREAKER_RESET_SECONDS"])
    primary = provider_breaker("sendgrid")
    httpserver.expect_request(SENDGRID).respond_with_data("upstream down", status=500)
    httpserver.expect_request(MAILGUN).respond_with_handler(mailgun_ok)

    first = send_email(sender, "p1")
    delivery = wait_for(lambda: finished(first), 30, what="failover")
    assert (delivery.status, delivery.provider) == ("sent", "mailgun")
    assert len(calls(httpserver, SENDGRID)) == 3, "three tries on the primary, with backoff"
    assert len(calls(httpserver, MAILGUN)) == 1
    kinds = list(
        Event.objects.filter(delivery_id=first).order_by("id").values_list("type", "provider")
    )
    assert kinds == [
        ("queued", ""),
        ("retry", "sendgrid"),
        ("retry", "sendgrid"),
        ("retry", "sendgrid"),
        ("sent", "mailgun"),
    ]

    # The primary's circuit is open now: the next send goes straight to the fallback.
    second = send_email(sender, "p1")
    assert wait_for(lambda: finished(second), 30, what="second").provider == "mailgun"
    assert len(calls(httpserver, SENDGRID)) == 3, "an open circuit is not called"
    assert primary.state() == "open"

    # The primary recovers; after the reset timeout one trial goes through and closes it.
    httpserver.clear_all_handlers()
    httpserver.expect_request(SENDGRID).respond_with_data("", status=202)
    httpserver.expect_request(MAILGUN).respond_with_handler(mailgun_ok)
    wait_for(lambda: primary.state() == "half_open", 10, interval=0.05, what="the reset timeout")
    third = send_email(sender, "p1")
    assert wait_for(lambda: finished(third), 30, what="third").provider == "sendgrid"
    assert primary.state() == "closed", "the trial's success closed the circuit"
    fourth = send_email(sender, "p1")
    assert wait_for(lambda: finished(fourth), 30, what="fourth").provider == "sendgrid"
    assert len(calls(httpserver, MAILGUN)) == 2, "nothing more went to the fallback"


def test_a_worker_killed_mid_send_is_swept_and_the_provider_called_at_most_twice(
    start_worker, httpserver, settings, sender, email_user
):
    settings.CELERY_QUEUE_PREFIX = "kill-"
    env = provider_env(httpserver, CACHE_KEY_PREFIX="kill")
    first_call = threading.Event()

    def slow_then_ok(request):
        if not first_call.is_set():
            first_call.set()
            time.sleep(4)  # the worker dies while waiting for this answer
        return Response("", status=202)

    httpserver.expect_request(SENDGRID).respond_with_handler(slow_then_ok)
    victim = start_worker(env, "kill-")
    delivery_id = send_email(sender, "p1")
    assert first_call.wait(15), "the provider was never called"
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    assert Delivery.objects.get(id=delivery_id).status == "sending"

    start_worker(env, "kill-")
    # The lease (3 s) expires; the beat's sweep gives the delivery back to the queue.
    wait_for(
        lambda: services.deliveries_sweep()["expired"] or None,
        20,
        interval=0.5,
        what="the lease to expire",
    )
    delivery = wait_for(lambda: finished(delivery_id), 30, what="re-delivery")
    assert delivery.status == "sent" and delivery.attempts == 2
    assert len(calls(httpserver, SENDGRID)) == 2
    # The worker died inside the provider call: the second send is flagged, not silent.
    assert delivery.possibly_duplicate and delivery.crashes == 1
    status = sender.get(f"/api/v1/notifications/requests/{delivery.notification.request_id}")
    (flagged,) = status.json()["notifications"][0]["deliveries"]
    assert flagged["id"] == str(delivery_id) and flagged["possibly_duplicate"] is True


def test_rate_limit_delays_and_never_drops(start_worker, httpserver, settings, sender):
    settings.CELERY_QUEUE_PREFIX = "rate-"
    start_worker(
        provider_env(
            httpserver,
            CACHE_KEY_PREFIX="rate",
            EMAIL_PROVIDERS="sendgrid",
            SENDGRID_RATE_PER_SECOND="2",
        ),
        "rate-",
    )
    arrivals = []

    def record(request):
        arrivals.append(time.monotonic())
        return Response("", status=202)

    httpserver.expect_request(SENDGRID).respond_with_handler(record)
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"email": f"r{i}@example.com"} for i in range(6)],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "s", "body": "b"},
        },
        format="json",
    )
    ids = [n["deliveries"][0]["id"] for n in response.json()["notifications"]]
    wait_for(lambda: all(finished(i) for i in ids), 30, what="every delivery")
    assert {Delivery.objects.get(id=i).status for i in ids} == {"sent"}
    assert len(arrivals) == 6
    # 2 per second with a burst of 2: the last one cannot arrive before ~2 s after the first.
    assert arrivals[-1] - arrivals[0] >= 1.8


def test_sms_answer_lost_mid_call_is_ambiguous_and_not_resent(httpserver, settings, sender):
    """In-process (no queue involved): Twilio answers 500 after taking the request."""
    settings.CELERY_QUEUE_PREFIX = "void-"  # nothing consumes these queues
    settings.SMS_PROVIDERS = ["twilio"]
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "twilio": {
            "BACKEND": "notifications.providers.twilio_sms.TwilioSmsProvider",
            "OPTIONS": {
                "ACCOUNT_SID": "AC" + "0" * 32,
                "AUTH_TOKEN": "t",
                "FROM": "+15005550006",
                "API_URL": httpserver.url_for("/twilio").rstrip("/"),
                "TIMEOUT": 2,
            },
        },
    }
    path = f"/twilio/2010-04-01/Accounts/AC{'0' * 32}/Messages.json"
    httpserver.expect_request(path).respond_with_data("gateway error", status=502)
    User.objects.create(username="s1", external_id="s1", phone="+33612345678")
    outcome = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"user_id": "s1"}],
            "category": "alerts",
            "channels": ["sms"],
            "content": {"body": "Your code is 1234"},
        },
    )
    delivery_id = outcome.body["notifications"][0]["deliveries"][0]["id"]
    assert services.delivery_attempt(delivery_id) == "ambiguous"
    delivery = Delivery.objects.get(id=delivery_id)
    assert delivery.status == "ambiguous" and delivery.provider == "twilio"
    assert services.delivery_attempt(delivery_id) == "not_claimed"
    assert len(calls(httpserver, path)) == 1
    assert services.deliveries_sweep() == {
        "expired": 0,
        "requeued": 0,
        "released": 0,
        "dead_lettered": 0,
    }
    assert timezone.now()  # the delivery stays ambiguous for staff to decide (admin action)
