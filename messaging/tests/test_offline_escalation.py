"""An offline participant's notification escalates (in-app at once, email later) and reading the
conversation cancels what is still pending, in the read's transaction: a real worker sends the
notification and the email through SendGrid played by a local server, which never hears of the
cancelled email."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone
from werkzeug import Response

from conftest import wait_for
from messaging.tests.conftest import create_conversation, make_user, post_message
from notifications import services
from notifications.models import Delivery

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SENDGRID = "/sendgrid/v3/mail/send"


@pytest.fixture
def sendgrid(start_worker, httpserver, settings):
    prefix = f"msgesc{uuid.uuid4().hex[:6]}-"
    base = httpserver.url_for("/").rstrip("/")
    httpserver.expect_request(SENDGRID).respond_with_handler(
        lambda request: Response("", status=202, headers={"X-Message-Id": uuid.uuid4().hex})
    )
    start_worker(
        {
            "EMAIL_PROVIDERS": "sendgrid",
            "SENDGRID_API_KEY": "SG.test",
            "SENDGRID_API_URL": f"{base}/sendgrid/v3/",
            "CACHE_KEY_PREFIX": prefix,
            # The worker writes the notification: its escalation comes from its settings.
            "MESSAGING_NOTIFY_PUSH_AFTER": "1s",
            "MESSAGING_NOTIFY_EMAIL_AFTER": "2s",
        },
        prefix,
    )
    settings.CELERY_QUEUE_PREFIX = prefix
    settings.MESSAGING_NOTIFY_DELAY_SECONDS = 0.5
    return httpserver


def emails_to(server, address: str) -> list:
    return [
        request
        for request, _ in server.log
        if request.path == SENDGRID
        and address in [p["to"][0]["email"] for p in request.get_json()["personalizations"]]
    ]


def email_step(user) -> Delivery:
    return Delivery.objects.get(notification__user=user, channel="email")


def test_reading_the_conversation_cancels_its_pending_email(sendgrid, as_user):
    tag = uuid.uuid4().hex[:6]
    alice, bob, carol = (make_user(f"{n}-{tag}") for n in ("alice", "bob", "carol"))
    conv = create_conversation(
        as_user(alice), "group", [bob.external_id, carol.external_id], title="Plans"
    )
    last = post_message(as_user(alice), conv["id"], "Saturday?")
    wait_for(
        lambda: (
            Delivery.objects.filter(channel="email", notification__user__in=[bob, carol])
            .values("notification__user")
            .distinct()
            .count()
            == 2
        ),
        30,
        what="both offline participants' notifications",
    )
    for user in (bob, carol):
        steps = {d.channel: d for d in Delivery.objects.filter(notification__user=user)}
        assert steps["in_app"].status == "delivered"
        assert steps["email"].status == "scheduled"
        assert (steps["email"].escalation_step, steps["push"].escalation_step) == (2, 1)

    response = as_user(bob).post(
        f"/api/v1/conversations/{conv['id']}/read", {"message_id": last["id"]}, format="json"
    )
    assert response.status_code == 200, response.content
    bobs = email_step(bob)
    assert (bobs.status, bobs.reason) == ("cancelled", "conversation read")

    # Carol did not read it: her email goes when its time comes; bob's never does.
    def carols_email_sent() -> bool:
        services.deliveries_sweep()
        return email_step(carol).status == "sent"

    wait_for(carols_email_sent, 30, interval=0.2, what="carol's email")
    assert timezone.now() > bobs.scheduled_for
    assert services.deliveries_sweep()["released"] == 0
    assert email_step(bob).status == "cancelled"
    assert len(emails_to(sendgrid, carol.email)) == 1
    assert emails_to(sendgrid, bob.email) == []


def test_reading_the_conversation_costs_one_statement_more(
    as_user, settings, django_assert_num_queries
):
    """The cancel is one statement in the read's transaction, run only when the read mark
    moved (and its events one more, only when it cancelled something)."""
    from messaging.models import Participant  # noqa: PLC0415
    from messaging.services import participant_notify_offline  # noqa: PLC0415

    settings.CELERY_QUEUE_PREFIX = "void-"  # the notify task runs here, below
    tag = uuid.uuid4().hex[:6]
    alice, bob = make_user(f"alice-{tag}"), make_user(f"bob-{tag}")
    conv = create_conversation(as_user(alice), "direct", [bob.external_id])
    first = post_message(as_user(alice), conv["id"], "one")
    assert (
        participant_notify_offline(Participant.objects.get(user=bob, conversation_id=conv["id"]).pk)
        == "sent"
    )
    second = post_message(as_user(alice), conv["id"], "two")
    client = as_user(bob)
    path = f"/api/v1/conversations/{conv['id']}/read"
    client.post(path, {"message_id": first["id"]}, format="json")  # cancels the pending steps
    assert email_step(bob).status == "cancelled"

    # Nothing left to cancel: the token's user, BEGIN, the participant, the message, the
    # participant locked, its update, the cancel (finding nothing: no events), the members and
    # the receipt, COMMIT, the participant read back.
    with django_assert_num_queries(11):
        client.post(path, {"message_id": second["id"]}, format="json")
    # An older message: the read mark does not move; no update, cancel nor receipt.
    with django_assert_num_queries(7):
        client.post(path, {"message_id": first["id"]}, format="json")
