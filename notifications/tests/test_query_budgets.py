"""Query budgets on the notification hot paths, through the entry point a caller reaches.

Each budget is exact and the same for one item as for many: a query per recipient, delivery or
inbox item shows up here as a failure listing every statement (pytest-django prints the SQL).
Each measured call follows one warm-up call, so process-wide caches (the provider chains, the
signing keys) are not counted.
"""

from __future__ import annotations

import pytest

from communication.models import RealtimeEvent, User
from notifications import services
from notifications.models import Delivery, Notification, NotificationPreference
from notifications.services import digests
from notifications.tests.fakes import sendgrid_in_process

pytestmark = pytest.mark.django_db

SENDGRID = "/sendgrid/v3/mail/send"
# Users, preferences, quiet hours, devices, suppressions, then one statement that writes the
# request, the notifications, the deliveries and their events (the category comes from the
# process's cache, warmed by the first send).
EMAIL_SEND = 6


def make_users(count: int, prefix: str = "r") -> list[User]:
    return User.objects.bulk_create(
        [
            User(
                username=f"{prefix}{i}",
                external_id=f"{prefix}{i}",
                email=f"{prefix}{i}@example.com",
            )
            for i in range(count)
        ]
    )


def send_to(client, users: list[User], channels):
    return client.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": u.external_id} for u in users],
            "category": "alerts",
            "channels": channels,
            "content": {"subject": "Hi", "title": "Hi", "body": "Hello."},
        },
        format="json",
    )


@pytest.fixture
def warm_sender(sender, settings):
    settings.CELERY_QUEUE_PREFIX = "void-"  # nothing consumes these queues: no worker races us
    send_to(sender, make_users(1, "warm"), ["email"])
    return sender


# ------------------------------------------------------------------------------------ the send


@pytest.mark.parametrize("recipients", [1, 1000])
def test_send_by_email_costs_the_same_queries_whatever_the_recipients(
    warm_sender, recipients, django_assert_num_queries
):
    users = make_users(recipients)
    with django_assert_num_queries(EMAIL_SEND):
        response = send_to(warm_sender, users, ["email"])
    assert response.status_code == 202, response.content
    assert Delivery.objects.filter(channel="email", status="queued").count() == recipients + 1


@pytest.mark.parametrize("recipients", [1, 1000])
def test_send_with_in_app_adds_two_queries_whatever_the_recipients(
    warm_sender, recipients, django_assert_num_queries
):
    """The email send's queries, then the unread counts of every recipient and one statement
    that allocates their sequences and stores their notification.created events."""
    many = make_users(recipients, "many")
    with django_assert_num_queries(EMAIL_SEND + 2):
        assert send_to(warm_sender, many, ["email", "in_app"]).status_code == 202
    titles = Notification.objects.filter(user__in=many).values_list("title", flat=True)
    assert list(titles) == ["Hi"] * recipients  # (encrypted: compared once read)
    assert RealtimeEvent.objects.filter(user__in=many, type="notification.created").count() == (
        recipients
    )


@pytest.mark.parametrize("recipients", [1, 1000])
def test_send_to_users_on_a_digest_costs_the_same_queries(
    warm_sender, recipients, django_assert_num_queries
):
    """The modes come with the preferences, in the same query: holding a send for a digest
    costs nothing more than sending it."""
    users = make_users(recipients, "dg")
    NotificationPreference.objects.bulk_create(
        [
            NotificationPreference(
                user=u, category_id="alerts", channel="email", enabled=True, mode="daily"
            )
            for u in users
        ]
    )
    with django_assert_num_queries(EMAIL_SEND):
        assert send_to(warm_sender, users, ["email"]).status_code == 202
    assert Delivery.objects.filter(channel="email", status="held").count() == recipients


# The savepoint pair of its transaction (inside the test's), the lock, the claim, the categories
# opted out since, the user; then the digest through the one writer: its facts (preferences,
# quiet hours, devices, suppressions), the digest family's keys and its variable schema (template,
# versions, variants), one statement for the rows; the Digest row, the items marked sent in one
# update and their events in one insert.
DIGEST_RELEASE = 18


@pytest.mark.parametrize("items", [1, 50])
def test_a_digest_release_costs_the_same_queries_whatever_it_gathers(
    warm_sender, items, django_assert_num_queries
):
    (user,) = make_users(1, "rel")
    NotificationPreference.objects.create(
        user=user, category_id="alerts", channel="email", enabled=True, mode="hourly"
    )
    for _ in range(items):
        send_to(warm_sender, [user], ["email"])
    due = Delivery.objects.filter(status="held").first().scheduled_for
    with django_assert_num_queries(DIGEST_RELEASE):
        assert digests.digest_release(user.pk, "email", now=due) is not None
    assert Delivery.objects.filter(status="sent", reason="digest").count() == items


# ------------------------------------------------------------------------ the worker's batch


@pytest.fixture
def sendgrid(settings, httpserver):
    sendgrid_in_process(settings, httpserver)
    httpserver.expect_request(SENDGRID).respond_with_data("", status=202)
    return httpserver


def queue_emails(count: int, prefix: str) -> list[str]:
    outcome = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"email": f"{prefix}{i}@example.com"} for i in range(count)],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Hi", "body": "Hello."},
        },
    )
    return [n["deliveries"][0]["id"] for n in outcome.body["notifications"]]


@pytest.mark.parametrize("batch", [1, 20])
def test_a_batch_attempt_costs_one_statement_per_provider_call(
    sendgrid, batch, django_assert_num_queries
):
    """One claim (which reads everything sending needs), then one statement per provider call:
    it records the previous call's acceptance with its events and marks the next delivery as
    being called (so that a crash repeats at most the call in flight, flagged), and one last
    record for the batch's final call."""
    services.deliveries_attempt(queue_emails(1, "warm"))
    ids = queue_emails(batch, "b")
    with django_assert_num_queries(2 + batch):
        outcomes = services.deliveries_attempt(ids)
    assert outcomes == {i: "sent" for i in ids}
    assert Delivery.objects.filter(id__in=ids, status="sent").count() == batch


@pytest.mark.parametrize("batch", [1, 20])
def test_a_batch_to_the_outbox_adds_only_the_outbox_row_per_delivery(
    settings, batch, django_assert_num_queries
):
    """The development outbox "sends" by inserting a row: that is the provider's own work; the
    pipeline around it is the same statements as for a real provider."""
    settings.CELERY_QUEUE_PREFIX = "void-"
    settings.EMAIL_PROVIDERS = []
    services.deliveries_attempt(queue_emails(1, "warm"))
    ids = queue_emails(batch, "o")
    with django_assert_num_queries(2 + 2 * batch):
        outcomes = services.deliveries_attempt(ids)
    assert outcomes == {i: "sent" for i in ids}
    assert Delivery.objects.filter(id__in=ids, status="delivered").count() == batch


# ------------------------------------------------------------------------------------ the inbox


def fill_inbox(user: User, items: int) -> None:
    for i in range(items):
        services.notification_send(
            caller="svc",
            payload={
                "recipients": [{"user_id": user.external_id}],
                "channels": ["in_app"],
                "content": {"title": f"t{i}", "body": "b"},
            },
        )


@pytest.mark.parametrize("items", [1, 30])
def test_history_costs_two_queries_whatever_the_items(
    as_user, alice, items, django_assert_num_queries
):
    """The user, then the page."""
    fill_inbox(alice, items)
    client = as_user(alice)
    client.get("/api/v1/notifications/history")
    with django_assert_num_queries(2):
        response = client.get("/api/v1/notifications/history")
    assert len(response.json()["results"]) == items


@pytest.mark.parametrize("items", [1, 30])
def test_unread_costs_three_queries_whatever_the_items(
    as_user, alice, items, django_assert_num_queries
):
    """The user, the items, the count."""
    fill_inbox(alice, items)
    client = as_user(alice)
    client.get("/api/v1/notifications/unread")
    with django_assert_num_queries(3):
        response = client.get("/api/v1/notifications/unread")
    body = response.json()
    assert (body["count"], len(body["results"])) == (items, items)
