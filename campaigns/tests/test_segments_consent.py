"""Segment rules about a category (consent, preferences) and about a campaign's own history
(events of a step or a campaign): who they select, on real PostgreSQL, in the one statement a
segment compiles to; refused without a category, naming the rule; and over the API."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.test import APIClient

from analytics import events
from campaigns import segments, selectors
from campaigns.models import Segment
from communication.models import Category, User
from notifications.models import Consent, NotificationPreference

pytestmark = pytest.mark.django_db

NOW = timezone.now()
CAMPAIGN = str(uuid.uuid4())
STEP_1 = str(uuid.uuid4())
STEP_2 = str(uuid.uuid4())


def rule(field, op, value, **qualifiers):
    return {"field": field, "op": op, "value": value, **qualifiers}


def _consent(user, granted, *, category=None, channel="", days_ago=0):
    record = Consent.objects.create(
        user=user, category_id=category, channel=channel, granted=granted, source="test"
    )
    Consent.objects.filter(pk=record.pk).update(created_at=NOW - dt.timedelta(days=days_ago))


@pytest.fixture
def people():
    Category.objects.get_or_create(key="news", defaults={"name": "News", "requires_consent": True})
    Category.objects.get_or_create(key="other", defaults={"name": "Other"})
    Category.objects.get_or_create(key="alarms", defaults={"name": "Alarms", "mandatory": True})
    ana, ben, cleo, dan = (
        User.objects.create(username=name, external_id=name)
        for name in ("ana", "ben", "cleo", "dan")
    )
    # ana: consent to everything, on every channel.
    _consent(ana, True)
    # ben: granted, then withdrew (the latest record wins).
    _consent(ben, True, category="news", days_ago=10)
    _consent(ben, False, category="news", days_ago=1)
    # cleo: granted for news by email only.
    _consent(cleo, True, category="news", channel="email")
    # dan: granted only for another category.
    _consent(dan, True, category="other")

    NotificationPreference.objects.create(
        user=ana, category_id="news", channel="email", enabled=False
    )
    NotificationPreference.objects.create(
        user=ben, category_id="news", channel="email", enabled=True
    )
    NotificationPreference.objects.create(
        user=cleo, category_id="other", channel="sms", enabled=False
    )
    NotificationPreference.objects.create(
        user=ana, category_id="alarms", channel="email", enabled=False
    )

    two_days = NOW - dt.timedelta(days=2)
    events.record_many(
        [
            {"type": "clicked", "user_id": ana.id, "campaign_id": CAMPAIGN, "step_id": STEP_1, "occurred_at": two_days},
            {"type": "clicked", "user_id": ben.id, "campaign_id": CAMPAIGN, "step_id": STEP_2, "occurred_at": two_days},
            {"type": "opened", "user_id": cleo.id, "campaign_id": CAMPAIGN, "step_id": STEP_1, "occurred_at": two_days},
            {"type": "clicked", "user_id": cleo.id, "occurred_at": two_days},
            {"type": "clicked", "user_id": dan.id, "step_id": STEP_1, "occurred_at": NOW - dt.timedelta(days=40)},
        ]
    )  # fmt: skip


def members(rules, category="news") -> set[str]:
    users = selectors.segment_users(rules=rules, category=category)
    return set(users.values_list("external_id", flat=True))


@pytest.mark.parametrize(
    "condition, expected",
    [
        (rule("consent", "eq", True), {"ana", "cleo"}),
        (rule("consent", "eq", False), {"ben", "dan"}),
        (rule("consent.email", "eq", True), {"ana", "cleo"}),
        (rule("consent.sms", "eq", True), {"ana"}),
        (rule("consent.sms", "eq", False), {"ben", "cleo", "dan"}),
        (rule("preferences.email", "eq", True), {"ben", "cleo", "dan"}),
        (rule("preferences.email", "eq", False), {"ana"}),
        (rule("preferences.sms", "eq", True), {"ana", "ben", "cleo", "dan"}),  # other category
        (rule("event.clicked", "within_days", 30), {"ana", "ben", "cleo"}),
        (rule("event.clicked", "within_days", 30, step=STEP_1), {"ana"}),
        (rule("event.clicked", "within_days", 60, step=STEP_1), {"ana", "dan"}),
        (rule("event.clicked", "within_days", 30, campaign=CAMPAIGN), {"ana", "ben"}),
        (rule("event.opened", "within_days", 30, campaign=CAMPAIGN, step=STEP_1), {"cleo"}),
        (rule("event.clicked", "within_days", 30, campaign=CAMPAIGN, step=STEP_1), {"ana"}),
        ({"not": rule("event.clicked", "within_days", 30, step=STEP_1)}, {"ben", "cleo", "dan"}),
    ],
)
def test_each_new_condition_selects_exactly_the_expected_users(people, condition, expected):
    assert members(condition) == expected


def test_not_of_consent_and_preferences_is_the_complement(people):
    everyone = {"ana", "ben", "cleo", "dan"}
    for field in ("consent", "consent.email", "preferences.email", "preferences.push"):
        yes = members(rule(field, "eq", True))
        assert members({"not": rule(field, "eq", True)}) == everyone - yes, field


def test_a_mandatory_category_cannot_be_turned_off(people):
    assert members(rule("preferences.email", "eq", True), category="alarms") == {
        "ana",
        "ben",
        "cleo",
        "dan",
    }
    assert members(rule("preferences.email", "eq", False), category="alarms") == set()


def test_everything_compiles_to_one_statement(people, django_assert_num_queries):
    rules = {
        "all": [
            rule("consent.email", "eq", True),
            rule("preferences.email", "eq", True),
            {"not": rule("event.clicked", "within_days", 30, step=STEP_1)},
            rule("event.opened", "within_days", 30, campaign=CAMPAIGN),
        ]
    }
    with django_assert_num_queries(1) as ctx:
        assert selectors.segment_count(rules=rules, category="news") == 1  # cleo
    sql = ctx.captured_queries[0]["sql"]
    assert "notifications_consent" in sql and "notifications_notificationpreference" in sql


def test_without_a_category_they_are_refused_naming_the_rule(people):
    rules = {"all": [rule("locale", "eq", "fr"), {"not": rule("preferences.sms", "eq", True)}]}
    segments.validate(rules)  # a segment may be saved without one
    with pytest.raises(ValidationError) as info:
        segments.compile_rules(rules)
    assert list(info.value.detail) == ["all[1].not.field"]
    assert "category" in str(info.value.detail["all[1].not.field"][0])


@pytest.mark.parametrize(
    "rules, path, words",
    [
        (rule("consent", "in", [True]), "op", "consent takes"),
        (rule("consent", "eq", "yes"), "value", "true or false"),
        (rule("consent.fax", "eq", True), "field", "consent.<channel>"),
        (rule("preferences", "eq", True), "field", "preferences.<channel>"),
        (rule("preferences.pigeon", "eq", True), "field", "Unknown field"),
        (rule("event.clicked", "within_days", 3, step="step-1"), "step", "UUID"),
        (rule("event.clicked", "within_days", 3, campaign=7), "campaign", "UUID"),
        (rule("locale", "eq", "fr", step=STEP_1), "step", "Unknown key"),
    ],
)
def test_invalid_new_rules_name_their_path(rules, path, words):
    with pytest.raises(ValidationError) as info:
        segments.validate(rules)
    assert list(info.value.detail) == [path]
    assert words in str(info.value.detail[path][0])


@pytest.fixture
def manager(make_service_token):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_service_token('crm', ['campaigns:manage'])}"
    )
    return client


def test_api_names_unknown_new_fields_and_previews_with_a_category(manager, people):
    refused = manager.post(
        "/api/v1/segments",
        {"name": "x", "rules": {"all": [rule("preferences.fax", "eq", True)]}},
        format="json",
    )
    assert refused.status_code == 400
    assert list(refused.json()["fields"]) == ["rules.all[0].field"]
    refused = manager.post(
        "/api/v1/segments",
        {"name": "x", "rules": rule("event.clicked", "within_days", 3, step="one")},
        format="json",
    )
    assert refused.status_code == 400 and list(refused.json()["fields"]) == ["rules.step"]

    created = manager.post(
        "/api/v1/segments",
        {"name": "Consenting", "rules": rule("consent", "eq", True)},
        format="json",
    )
    assert created.status_code == 201, created.content
    preview = f"/api/v1/segments/{created.json()['id']}/preview"
    without = manager.get(preview)
    assert without.status_code == 400 and list(without.json()["fields"]) == ["field"]
    for bad in ("nope", "x" * 100):
        unknown = manager.get(preview + "?category=" + bad)
        assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_category"
    assert manager.get(preview + "?category=a%00b").status_code == 400  # never a 500
    answered = manager.get(preview + "?category=news")
    assert answered.status_code == 200, answered.content
    assert answered.json()["count"] == 2
    assert [u["user_id"] for u in answered.json()["sample"]] == ["ana", "cleo"]
    assert Segment.objects.count() == 1
