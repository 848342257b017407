"""Frequency caps (``Category.frequency_caps``, ``notifications.services.caps``): configuration
refused when it makes no sense, and the worker's decision just before the provider, in-process
with SendGrid played by a local HTTP server. Two real workers racing: test_frequency_caps_workers.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from werkzeug import Response

from analytics.models import Event
from communication.compliance import erasure
from communication.compliance.keyed import lookup_hash
from communication.models import Category, User
from notifications import services
from notifications.models import CapSlot, Delivery
from notifications.tests.fakes import sendgrid_in_process

SENDGRID = "/sendgrid/v3/mail/send"
HOUR = {"limit": 2, "period": "1h"}


# --------------------------------------------------------------------------- configuration


@pytest.mark.django_db  # full_clean checks the table's constraints too
@pytest.mark.parametrize(
    ("caps", "message"),
    [
        (["email"], "Expected an object of channels"),
        ("3 a week", "Expected an object of channels"),
        ({"in_app": {"limit": 3, "period": "7d"}}, "'in_app': caps are kept on email, sms, push"),
        ({"fax": {"limit": 3, "period": "7d"}}, "'fax': caps are kept on"),
        ({"email": 3}, 'email: expected exactly {"limit": n, "period": "7d"}'),
        ({"email": {"limit": 3}}, "email: expected exactly"),
        ({"email": {"limit": 3, "period": "7d", "x": 1}}, "email: expected exactly"),
        ({"email": {"limit": 0, "period": "7d"}}, "limit must be a whole number from 1 to 1000"),
        ({"email": {"limit": "3", "period": "7d"}}, "limit must be a whole number"),
        ({"email": {"limit": True, "period": "7d"}}, "limit must be a whole number"),
        ({"email": {"limit": 1001, "period": "7d"}}, "limit must be a whole number"),
        ({"email": {"limit": 3, "period": "7 days"}}, "'7 days' is not a period"),
        ({"email": {"limit": 3, "period": "0d"}}, "'0d' is not a period"),
        ({"email": {"limit": 3, "period": 7}}, "7 is not a period"),
        ({"email": {"limit": 3, "period": "30s"}}, "'30s' is not a period"),
        ({"email": {"limit": 3, "period": "400d"}}, "period must be from 1m to 366d"),
    ],
)
def test_a_nonsense_cap_is_refused_with_what_is_wrong(caps, message):
    category = Category(key="weekly", name="Weekly", frequency_caps=caps)
    with pytest.raises(ValidationError) as refused:
        category.full_clean(exclude=["key"])
    assert message in " ".join(refused.value.message_dict["frequency_caps"])


@pytest.mark.django_db
def test_sensible_caps_are_accepted():
    category = Category(
        key="weekly",
        name="Weekly",
        frequency_caps={
            "email": {"limit": 3, "period": "7d"},
            "sms": {"limit": 1, "period": "12h"},
        },
    )
    category.full_clean(exclude=["key"])


@pytest.mark.django_db
def test_a_mandatory_category_cannot_be_capped():
    category = Category(
        key="codes",
        name="Codes",
        mandatory=True,
        frequency_caps={"sms": {"limit": 3, "period": "1h"}},
    )
    with pytest.raises(ValidationError) as refused:
        category.full_clean()
    assert "must always arrive" in refused.value.message_dict["frequency_caps"][0]
    # The database holds the line for a write that skips the form.
    with pytest.raises(IntegrityError), transaction.atomic():
        category.save()


# ---------------------------------------------------------------------------- the worker


@pytest.fixture
def sendgrid(settings, httpserver):
    sendgrid_in_process(settings, httpserver)
    settings.DELIVERY_RETRY_BASE_SECONDS = 60
    settings.SMS_PROVIDERS = []  # the development outbox
    return httpserver


def accept_all(server) -> None:
    server.expect_request(SENDGRID).respond_with_data("", status=202)


def sent_to(server) -> list[str]:
    return [
        json.loads(req.data)["personalizations"][0]["to"][0]["email"]
        for req, _ in server.log
        if req.path == SENDGRID
    ]


def capped(key: str = "digest-news", **caps) -> Category:
    return Category.objects.create(
        key=key, name=key, default_channels=["email", "sms"], frequency_caps=caps
    )


def queue(
    to: dict, category: str, channels=("email",), priority: str = "normal", count: int = 1
) -> list[str]:
    """``count`` separate sends (each its own notification), their delivery ids in order."""
    ids = []
    for _ in range(count):
        outcome = services.notification_send(
            caller="svc",
            payload={
                "recipients": [to],
                "category": category,
                "channels": list(channels),
                "priority": priority,
                "content": {"subject": "News", "body": "Something new."},
            },
        )
        ids += [d["id"] for d in outcome.body["notifications"][0]["deliveries"]]
    return ids


@pytest.fixture
def carol(db):
    return User.objects.create(
        username="carol", external_id="carol", email="carol@example.com", phone="+33612345679"
    )


@pytest.fixture
def dave(db):
    return User.objects.create(username="dave", external_id="dave", email="dave@example.com")


@pytest.mark.django_db
def test_a_cap_skips_what_is_past_it_and_says_why(sendgrid, carol):
    accept_all(sendgrid)
    capped(email=HOUR)
    ids = queue({"user_id": "carol"}, "digest-news", count=3)
    outcomes = services.deliveries_attempt(ids)
    assert outcomes == {ids[0]: "sent", ids[1]: "sent", ids[2]: "skipped"}
    assert sent_to(sendgrid) == ["carol@example.com"] * 2
    skipped = Delivery.objects.get(id=ids[2])
    assert (skipped.status, skipped.reason, skipped.lease_until) == (
        "skipped",
        "frequency_cap",
        None,
    )
    event = Event.objects.get(delivery_id=ids[2], type="skipped")
    assert (event.data, event.category, event.channel) == (
        {"reason": "frequency_cap"},
        "digest-news",
        "email",
    )
    # A later batch finds the window full too.
    later = queue({"user_id": "carol"}, "digest-news")
    assert services.deliveries_attempt(later) == {later[0]: "skipped"}
    assert len(sent_to(sendgrid)) == 2


@pytest.mark.django_db
def test_urgent_priority_does_not_bypass_a_cap(sendgrid, carol):
    accept_all(sendgrid)
    capped(email={"limit": 1, "period": "1d"})
    ids = queue({"user_id": "carol"}, "digest-news", priority="urgent", count=2)
    assert services.deliveries_attempt(ids) == {ids[0]: "sent", ids[1]: "skipped"}


@pytest.mark.django_db
def test_the_window_slides(sendgrid, carol):
    accept_all(sendgrid)
    capped(email=HOUR)
    first = queue({"user_id": "carol"}, "digest-news", count=2)
    assert set(services.deliveries_attempt(first).values()) == {"sent"}
    # 40 minutes later the first still counts.
    CapSlot.objects.filter(delivery_id=first[0]).update(
        granted_at=timezone.now() - dt.timedelta(minutes=40)
    )
    CapSlot.objects.filter(delivery_id=first[1]).update(
        granted_at=timezone.now() - dt.timedelta(minutes=20)
    )
    blocked = queue({"user_id": "carol"}, "digest-news")
    assert services.deliveries_attempt(blocked) == {blocked[0]: "skipped"}
    # 70 minutes after the first: it has left the window, the second has not.
    CapSlot.objects.filter(delivery_id=first[0]).update(
        granted_at=timezone.now() - dt.timedelta(minutes=70)
    )
    ids = queue({"user_id": "carol"}, "digest-news", count=2)
    assert services.deliveries_attempt(ids) == {ids[0]: "sent", ids[1]: "skipped"}
    assert len(sent_to(sendgrid)) == 3
    # The place that left the window is pruned as the window moves on.
    assert not CapSlot.objects.filter(delivery_id=first[0]).exists()


@pytest.mark.django_db
def test_other_channels_categories_and_people_are_not_affected(sendgrid, settings, carol, dave):
    accept_all(sendgrid)
    capped(email={"limit": 1, "period": "7d"})
    capped("other-news", email={"limit": 1, "period": "7d"})
    ids = queue({"user_id": "carol"}, "digest-news", channels=("email", "sms"))
    ids += queue({"user_id": "carol"}, "digest-news", channels=("email", "sms"))
    ids += queue({"user_id": "carol"}, "other-news")
    ids += queue({"user_id": "dave"}, "digest-news")
    ids += queue({"user_id": "carol"}, "alerts")  # no cap at all
    outcomes = services.deliveries_attempt(ids)
    channel = {str(i): c for i, c in Delivery.objects.values_list("id", "channel")}
    got = [(channel[i], outcomes[i]) for i in ids]
    assert got == [
        ("email", "sent"),
        ("sms", "sent"),  # no sms cap
        ("email", "skipped"),  # carol's one digest-news email this week
        ("sms", "sent"),
        ("email", "sent"),  # another category
        ("email", "sent"),  # another person
        ("email", "sent"),
    ]


@pytest.mark.django_db
def test_an_address_only_recipient_is_capped_by_its_address(sendgrid):
    accept_all(sendgrid)
    capped(email={"limit": 1, "period": "7d"})
    ids = queue({"email": "walk-in@example.com"}, "digest-news")
    ids += queue({"email": "Walk-In@Example.com"}, "digest-news")
    ids += queue({"email": "someone-else@example.com"}, "digest-news")
    assert list(services.deliveries_attempt(ids).values()) == ["sent", "skipped", "sent"]
    # Kept by keyed hash: no address in the ledger.
    assert not CapSlot.objects.filter(subject__icontains="example").exists()


@pytest.mark.django_db
def test_a_retried_delivery_takes_one_place(sendgrid, carol):
    answers = iter([Response("busy", status=503), *[Response("", status=202)] * 5])
    sendgrid.expect_request(SENDGRID).respond_with_handler(lambda request: next(answers))
    capped(email=HOUR)
    first = queue({"user_id": "carol"}, "digest-news")
    assert services.deliveries_attempt(first) == {first[0]: "retry"}
    Delivery.objects.filter(id=first[0]).update(next_attempt_at=timezone.now())
    assert services.deliveries_attempt(first) == {first[0]: "sent"}
    ids = queue({"user_id": "carol"}, "digest-news", count=2)
    assert services.deliveries_attempt(ids) == {ids[0]: "sent", ids[1]: "skipped"}
    assert len(sent_to(sendgrid)) == 3  # two calls for the first, one for the second
    assert CapSlot.objects.count() == 2


@pytest.mark.django_db
def test_a_delivery_that_fails_for_good_gives_its_place_back(sendgrid, carol):
    answers = iter([Response('{"errors": [{"message": "bad"}]}', status=400)])

    def answer(request):
        return next(answers, Response("", status=202))

    sendgrid.expect_request(SENDGRID).respond_with_handler(answer)
    capped(email=HOUR)
    ids = queue({"user_id": "carol"}, "digest-news", count=4)
    outcomes = services.deliveries_attempt(ids)
    # The first two took the places; the first failed and gave its place back, too late for
    # this batch (decided before any call), in time for the next.
    assert list(outcomes.values()) == ["failed", "sent", "skipped", "skipped"]
    more = queue({"user_id": "carol"}, "digest-news", count=2)
    assert services.deliveries_attempt(more) == {more[0]: "sent", more[1]: "skipped"}


@pytest.mark.django_db
@pytest.mark.parametrize("batch", [1, 20])
@pytest.mark.parametrize(("sends", "queries"), [(1, 4), (2, 5)])
def test_a_capped_batch_costs_the_same_queries_whatever_its_size(
    sendgrid, django_assert_num_queries, batch, sends, queries
):
    """The claim, the locks, one statement deciding every delivery (places and skips), the
    skips' events when there are any, then what any batch costs per provider call (one
    statement each, recording the last acceptance and marking the next call) and the last
    acceptance's record: the caps add the same for 1 person as for 20, each sent one message
    (all under their cap) or two (one past it)."""
    accept_all(sendgrid)
    capped(email={"limit": 1, "period": "1d"})
    people = User.objects.bulk_create(
        [User(username=f"q{i}", external_id=f"q{i}", email=f"q{i}@example.com") for i in range(20)]
    )
    services.deliveries_attempt(queue({"email": "warm@example.com"}, "alerts"))
    ids = []
    for person in people[:batch]:
        ids += queue({"user_id": person.external_id}, "digest-news", count=sends)
    with django_assert_num_queries(queries + batch):
        outcomes = services.deliveries_attempt(ids)
    assert list(outcomes.values()) == ["sent", "skipped"][:sends] * batch


@pytest.mark.django_db
def test_a_category_without_caps_costs_no_query(sendgrid, django_assert_num_queries):
    """The claim reads the category with the delivery: an uncapped batch costs what any batch
    does (the claim, a statement per provider call, the last record)."""
    accept_all(sendgrid)
    services.deliveries_attempt(queue({"email": "warm@example.com"}, "alerts"))
    ids = queue({"email": "x@example.com"}, "alerts", count=5)
    with django_assert_num_queries(2 + len(ids)):
        assert set(services.deliveries_attempt(ids).values()) == {"sent"}


@pytest.mark.django_db
def test_the_categories_api_shows_the_caps(as_user, carol):
    capped(email={"limit": 3, "period": "7d"})
    body = as_user(carol).get("/api/v1/notifications/categories").json()
    caps = {c["key"]: c["frequency_caps"] for c in body}
    assert caps["digest-news"] == {"email": {"limit": 3, "period": "7d"}}
    assert caps["alerts"] == {}


@pytest.mark.django_db
def test_erasing_a_person_erases_their_places(sendgrid, carol):
    accept_all(sendgrid)
    capped(email=HOUR)
    services.deliveries_attempt(queue({"user_id": "carol"}, "digest-news"))
    services.deliveries_attempt(queue({"email": "walk-in@example.com"}, "digest-news"))
    services.deliveries_attempt(queue({"email": "other@example.com"}, "digest-news"))
    assert CapSlot.objects.count() == 3
    erasure.erase("user_id", "carol", requested_by="test")
    erasure.erase("email", "walk-in@example.com", requested_by="test")
    assert list(CapSlot.objects.values_list("subject", flat=True)) == [
        f"a:{lookup_hash('other@example.com')}"
    ]


@pytest.mark.django_db
def test_a_cap_written_past_validation_does_not_stop_sending(sendgrid, carol, caplog):
    accept_all(sendgrid)
    category = capped(email=HOUR)
    Category.objects.filter(pk=category.pk).update(frequency_caps={"email": {"limit": "x"}})
    ids = queue({"user_id": "carol"}, "digest-news", count=3)
    assert set(services.deliveries_attempt(ids).values()) == {"sent"}
    assert "digest-news has an invalid email cap" in caplog.text


@pytest.mark.django_db
def test_a_delivery_cancelled_after_taking_a_place_gives_it_back(sendgrid, carol):
    answers = iter([Response("busy", status=503)])
    sendgrid.expect_request(SENDGRID).respond_with_handler(
        lambda request: next(answers, Response("", status=202))
    )
    capped(email={"limit": 1, "period": "1h"})
    first = services.notification_send(
        caller="svc",
        payload={
            "recipients": [{"user_id": "carol"}],
            "category": "digest-news",
            "channels": ["email"],
            "content": {"subject": "News", "body": "Something new."},
            "cancellation_key": "news-1",
        },
    ).body["notifications"][0]["deliveries"][0]["id"]
    # The provider was busy: back in the queue, still holding the only place.
    assert services.deliveries_attempt([first]) == {first: "retry"}
    assert services.cancellation_key_cancel(caller="svc", key="news-1").cancelled == 1
    later = queue({"user_id": "carol"}, "digest-news")
    assert services.deliveries_attempt(later) == {later[0]: "sent"}
