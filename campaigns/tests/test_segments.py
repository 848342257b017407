"""The segment rule language: who each operator and combination selects, on real PostgreSQL, in
one SQL statement, and how invalid rules are refused (with the path of the faulty part)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from analytics import events
from campaigns import segments, selectors
from communication.models import User

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def _user(external_id: str | None, *, days_old: int = 0, **fields) -> User:
    user = User.objects.create(username=f"u-{external_id or fields.get('name')}", **fields)
    if external_id is not None:
        user.external_id = external_id
        user.save(update_fields=["external_id"])
    User.objects.filter(pk=user.pk).update(created_at=NOW - dt.timedelta(days=days_old))
    return user


@pytest.fixture
def people():
    ana = _user(
        "ana",
        days_old=100,
        locale="fr",
        timezone="Europe/Paris",
        organization="acme",
        roles=["admin", "billing"],
        attributes={"plan": "pro", "age": 34, "tags": ["beta", "vip"], "city": "Paris"},
    )
    ben = _user(
        "ben",
        days_old=10,
        locale="en",
        timezone="America/New_York",
        organization="acme",
        roles=["billing"],
        attributes={"plan": "free", "age": "34", "tags": ["beta"], "city": "New York"},
    )
    cleo = _user(
        "cleo",
        locale="fr-CA",
        timezone="America/Toronto",
        organization="globex",
        attributes={"plan": "pro", "age": 19, "vip": True, "city": ["Toronto"]},
    )
    dan = _user("dan")
    # Never in a segment: an inactive user, and a staff account without an identity.
    gone = _user("gone", locale="fr", is_active=False, attributes={"plan": "pro"})
    _user(None, name="staff-only", locale="fr", attributes={"plan": "pro"})
    events.record_many(
        [
            {"type": "opened", "user_id": ana.id, "occurred_at": NOW - dt.timedelta(days=5)},
            {"type": "opened", "user_id": ben.id, "occurred_at": NOW - dt.timedelta(days=40)},
            {"type": "clicked", "user_id": cleo.id, "occurred_at": NOW - dt.timedelta(days=1)},
            {"type": "opened", "user_id": gone.id, "occurred_at": NOW - dt.timedelta(days=1)},
            {"type": "sent", "occurred_at": NOW - dt.timedelta(days=1)},  # no user
        ]
    )
    return {"ana": ana, "ben": ben, "cleo": cleo, "dan": dan}


def members(rules) -> set[str]:
    return set(selectors.segment_users(rules=rules).values_list("external_id", flat=True))


def rule(field, op, value):
    return {"field": field, "op": op, "value": value}


@pytest.mark.parametrize(
    "condition, expected",
    [
        (rule("locale", "eq", "fr"), {"ana"}),
        (rule("locale", "in", ["fr", "fr-CA", "de"]), {"ana", "cleo"}),
        (rule("locale", "contains", "fr"), {"ana", "cleo"}),
        (rule("locale", "exists", True), {"ana", "ben", "cleo"}),
        (rule("locale", "exists", False), {"dan"}),
        (rule("timezone", "contains", "America/"), {"ben", "cleo"}),
        (rule("timezone", "eq", "Europe/Paris"), {"ana"}),
        (rule("organization", "eq", "acme"), {"ana", "ben"}),
        (rule("organization", "in", ["globex"]), {"cleo"}),
        (rule("roles", "contains", "billing"), {"ana", "ben"}),
        (rule("roles", "contains", "admin"), {"ana"}),
        (rule("roles", "in", ["admin", "nobody"]), {"ana"}),
        (rule("roles", "eq", ["billing", "admin"]), {"ana"}),
        (rule("roles", "eq", ["billing"]), {"ben"}),
        (rule("roles", "exists", True), {"ana", "ben"}),
        (rule("roles", "exists", False), {"cleo", "dan"}),
        (rule("created_at", "within_days", 30), {"ben", "cleo", "dan"}),
        (rule("created_at", "within_days", 5), {"cleo", "dan"}),
        (rule("created_at", "lt", (NOW - dt.timedelta(days=50)).isoformat()), {"ana"}),
        (
            rule("created_at", "gt", (NOW - dt.timedelta(days=50)).isoformat()),
            {"ben", "cleo", "dan"},
        ),
        (rule("attributes.plan", "eq", "pro"), {"ana", "cleo"}),
        (rule("attributes.plan", "in", ["free", "team"]), {"ben"}),
        (rule("attributes.vip", "eq", True), {"cleo"}),
        # A number and the string of it are different values.
        (rule("attributes.age", "eq", 34), {"ana"}),
        (rule("attributes.age", "eq", "34"), {"ben"}),
        (rule("attributes.age", "in", [34, 19]), {"ana", "cleo"}),
        (rule("attributes.age", "gt", 20), {"ana"}),  # ben's "34" is a string: not a number
        (rule("attributes.age", "lt", 20), {"cleo"}),
        (rule("attributes.tags", "contains", "vip"), {"ana"}),
        (rule("attributes.tags", "contains", "beta"), {"ana", "ben"}),
        (rule("attributes.city", "contains", "York"), {"ben"}),  # a string's substring
        (rule("attributes.city", "contains", "Toronto"), {"cleo"}),  # an array's element
        (rule("attributes.tags", "exists", True), {"ana", "ben"}),
        (rule("attributes.tags", "exists", False), {"cleo", "dan"}),
        (rule("event.opened", "within_days", 30), {"ana"}),
        (rule("event.opened", "within_days", 60), {"ana", "ben"}),
        (rule("event.clicked", "within_days", 7), {"cleo"}),
        (rule("event.bounced", "within_days", 365), set()),
    ],
)
def test_each_operator_selects_exactly_the_expected_users(people, condition, expected):
    assert members(condition) == expected


def test_and_or_not_combine(people):
    pro = rule("attributes.plan", "eq", "pro")
    french = rule("locale", "contains", "fr")
    assert members({"all": [pro, french, rule("organization", "eq", "acme")]}) == {"ana"}
    assert members({"any": [rule("locale", "eq", "en"), rule("attributes.vip", "eq", True)]}) == {
        "ben",
        "cleo",
    }
    assert members({"not": pro}) == {"ben", "dan"}
    assert members({"all": [{"not": rule("event.opened", "within_days", 30)}, french]}) == {"cleo"}
    assert members({"not": {"any": [pro, rule("roles", "exists", True)]}}) == {"dan"}
    # Nested to the limit.
    nested: dict = pro
    for _ in range(segments.MAX_DEPTH - 1):
        nested = {"not": nested}
    assert members(nested) == {"ben", "dan"}  # nine nots: an odd number


def test_not_includes_users_lacking_the_attribute(people):
    """SQL's NULL would drop dan (no attributes at all) from every ``not``: he is kept."""
    for condition in (
        rule("attributes.plan", "eq", "pro"),
        rule("attributes.plan", "in", ["pro"]),
        rule("attributes.age", "gt", 0),
        rule("attributes.tags", "contains", "beta"),
    ):
        assert "dan" in members({"not": condition}), condition
        assert members({"not": condition}) == {"ana", "ben", "cleo", "dan"} - members(condition)


def test_keys_named_like_orm_lookups_are_only_keys(people):
    User.objects.filter(pk=people["dan"].pk).update(attributes={"in": "x", "contains": [1]})
    assert members(rule("attributes.in", "eq", "x")) == {"dan"}
    assert members(rule("attributes.contains", "exists", True)) == {"dan"}


def test_compiling_and_counting_is_one_statement(people, django_assert_num_queries):
    rules = {
        "all": [
            {"any": [rule("locale", "in", ["fr", "en"]), rule("attributes.vip", "eq", True)]},
            {"not": rule("roles", "contains", "admin")},
            rule("event.opened", "within_days", 60),
            rule("created_at", "within_days", 365),
            rule("attributes.age", "exists", True),
        ]
    }
    with django_assert_num_queries(1) as ctx:
        assert selectors.segment_count(rules=rules) == 1  # ben
    sql = ctx.captured_queries[0]["sql"]
    assert "EXISTS" in sql and "analytics_event" in sql


def test_preview_costs_two_statements_whatever_the_size(people, django_assert_num_queries):
    for i in range(30):
        _user(f"bulk-{i:02}", locale="fr")
    with django_assert_num_queries(2):
        preview = selectors.segment_preview(rules=rule("locale", "eq", "fr"))
    assert preview["count"] == 31
    assert len(preview["sample"]) == 20
    assert preview["sample"][0]["user_id"] == "ana"
    assert set(preview["sample"][0]) == {
        "user_id",
        "locale",
        "timezone",
        "organization",
        "roles",
        "created_at",
    }
    with django_assert_num_queries(2):
        assert selectors.segment_preview(rules=rule("locale", "eq", "xx")) == {
            "count": 0,
            "sample": [],
        }


def _error(rules) -> dict:
    with pytest.raises(ValidationError) as info:
        segments.validate(rules)
    return info.value.detail


@pytest.mark.parametrize(
    "rules, path, words",
    [
        (rule("colour", "eq", "red"), "field", "Unknown field"),
        (rule("locale.x", "eq", "red"), "field", "Unknown field"),
        ({"all": [rule("locale", "eq", "fr"), rule("locale", "like", "fr")]}, "all[1].op", "like"),
        ({"all": [rule("locale", "eq", 3)]}, "all[0].value", "string"),
        (rule("locale", "gt", "fr"), "op", "locale takes"),
        (rule("event.opened", "eq", 3), "op", "event takes"),
        (rule("event.opened", "within_days", 0), "value", "days"),
        (rule("event.opened", "within_days", True), "value", "days"),
        (rule("event.Opened!", "within_days", 3), "field", "Event types"),
        (rule("attributes.a b", "eq", 1), "field", "Attribute keys"),
        (rule("attributes.a__b", "eq", 1), "field", "Attribute keys"),
        (rule("attributes.", "eq", 1), "field", "Attribute keys"),
        (rule("attributes.x", "gt", "3"), "value", "number"),
        (rule("attributes.x", "eq", {"a": 1}), "value", "string, number or boolean"),
        (rule("attributes.x", "eq", float("nan")), "value", "string, number or boolean"),
        (rule("created_at", "gt", "yesterday"), "value", "ISO 8601"),
        (rule("created_at", "gt", "9999-12-31T23:59:59-23:59"), "value", "ISO 8601"),
        (rule("roles", "in", []), "value", "list"),
        (rule("roles", "in", ["a", 1]), "value", "string"),
        (rule("locale", "exists", "yes"), "value", "true or false"),
        (rule("locale", "eq", "f\x00r"), "value", "NUL"),
        (rule("attributes.a\x00", "eq", "x"), "field", "NUL"),
        (rule("locale", "e\x00q", "x"), "op", "NUL"),
        ({"field": "locale", "op": "eq"}, "value", "required"),
        ({"field": "locale", "op": "eq", "value": "fr", "extra": 1}, "extra", "Unknown key"),
        ({"all": []}, "all", "non-empty"),
        ({"any": "x"}, "any", "non-empty"),
        ({"all": [], "any": []}, "non_field_errors", "A rule is"),
        ({"xor": []}, "non_field_errors", "A rule is"),
        ([], "non_field_errors", "object"),
        ({"not": {"any": [rule("locale", "eq", "fr"), 3]}}, "not.any[1]", "object"),
    ],
)
def test_invalid_rules_name_their_path(rules, path, words):
    detail = _error(rules)
    assert list(detail) == [path]
    assert words in str(detail[path][0])


def test_nesting_and_size_are_bounded():
    deep: dict = rule("locale", "eq", "fr")
    for _ in range(segments.MAX_DEPTH):
        deep = {"not": deep}
    assert list(_error(deep)) == [".".join(["not"] * segments.MAX_DEPTH)]
    # Far deeper than Python's recursion limit: refused at the limit, without recursing.
    abyss: dict = rule("locale", "eq", "fr")
    for _ in range(100_000):
        abyss = {"not": abyss}
    assert "nest" in str(next(iter(_error(abyss).values()))[0])
    wide = {"any": [rule("locale", "eq", "fr")] * 100_000}
    assert "At most" in str(_error(wide)["any"][0])
    many = {"all": [{"any": [rule("locale", "eq", "fr")] * 60}] * 2}
    assert "At most" in str(_error(many)["non_field_errors"][0])
    segments.validate({"any": [rule("locale", "eq", "fr")] * (segments.MAX_RULES - 1)})
