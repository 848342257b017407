"""``/api/v1/segments``: create, list, read, change, delete, preview; who may; and how bad rules
are answered (400 naming the rule's path, never a 500)."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from campaigns.models import Segment
from communication.models import User

pytestmark = pytest.mark.django_db

FRENCH = {"field": "locale", "op": "eq", "value": "fr"}


def _client(token: str | None = None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def manager(make_service_token):
    return _client(make_service_token("crm", ["campaigns:manage"]))


def _people(n: int, locale: str = "fr", start: int = 0) -> None:
    User.objects.bulk_create(
        User(username=f"p-{locale}-{i}", external_id=f"p-{locale}-{i:03}", locale=locale)
        for i in range(start, start + n)
    )


def _create(client, rules=FRENCH, name="French speakers", **extra):
    return client.post("/api/v1/segments", {"name": name, "rules": rules, **extra}, format="json")


def test_create_read_list_change_delete(manager):
    created = _create(manager, description="Everyone in French")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["rules"] == FRENCH
    assert body["created_by"] == "service:crm"
    segment_id = body["id"]
    assert uuid.UUID(segment_id).version == 7

    for path in (f"/api/v1/segments/{segment_id}", f"/api/v1/segments/{segment_id}/"):
        assert manager.get(path).json()["name"] == "French speakers"
    _create(manager, name="Second")
    listed = manager.get("/api/v1/segments/?limit=1").json()
    assert listed["count"] == 2 and [s["name"] for s in listed["results"]] == ["Second"]

    english = {"field": "locale", "op": "eq", "value": "en"}
    changed = manager.patch(
        f"/api/v1/segments/{segment_id}", {"rules": english, "name": "English"}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert Segment.objects.get(id=segment_id).rules == english
    refused = manager.patch(
        f"/api/v1/segments/{segment_id}",
        {"rules": {"not": {"field": "locale", "op": "gt", "value": "x"}}},
        format="json",
    )
    assert refused.status_code == 400 and list(refused.json()["fields"]) == ["rules.not.op"]
    assert Segment.objects.get(id=segment_id).rules == english

    assert manager.delete(f"/api/v1/segments/{segment_id}").status_code == 204
    assert manager.get(f"/api/v1/segments/{segment_id}").json()["code"] == "not_found"
    assert manager.get("/api/v1/segments/not-a-uuid").status_code == 404


def test_preview_counts_and_samples_at_a_fixed_query_cost(manager):
    segment_id = _create(manager).json()["id"]
    _people(3)
    _people(2, locale="en")

    def preview():
        with CaptureQueriesContext(connection) as queries:
            response = manager.get(f"/api/v1/segments/{segment_id}/preview")
        assert response.status_code == 200, response.content
        return response.json(), len(queries)

    small, small_queries = preview()
    assert small["count"] == 3
    assert [u["user_id"] for u in small["sample"]] == ["p-fr-000", "p-fr-001", "p-fr-002"]
    assert small["sample"][0]["locale"] == "fr"
    _people(57, start=3)
    big, big_queries = preview()
    assert big["count"] == 60 and len(big["sample"]) == 20
    assert small_queries == big_queries <= 4  # the segment, its count and its sample (+ savepoints)


@pytest.mark.parametrize(
    "rules, field",
    [
        ({"field": "colour", "op": "eq", "value": "red"}, "rules.field"),
        ({"all": [FRENCH, {"field": "locale", "op": "like", "value": "x"}]}, "rules.all[1].op"),
        ({"any": [FRENCH, {"field": "roles", "op": "in", "value": "admin"}]}, "rules.any[1].value"),
        ({"not": {"not": {"all": []}}}, "rules.not.not.all"),
        ("locale = fr", "rules"),
    ],
)
def test_invalid_rules_are_a_400_naming_the_path(manager, rules, field):
    response = _create(manager, rules=rules)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert list(body["fields"]) == [field], body


def test_too_deep_and_too_large_documents_are_a_400(manager):
    deep: dict = FRENCH
    for _ in range(11):
        deep = {"not": deep}
    response = _create(manager, rules=deep)
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["rules" + ".not" * 10]

    # Deeper than Python's JSON parser can read: still a 400, not a 500.
    raw = '{"name": "abyss", "rules": ' + '{"not": ' * 5000 + json.dumps(FRENCH) + "}" * 5001
    response = manager.post("/api/v1/segments", raw, content_type="application/json")
    assert response.status_code == 400, response.content

    huge = {"any": [FRENCH] * 50_000}
    response = _create(manager, rules=huge)
    assert response.status_code == 400
    assert "At most" in response.json()["fields"]["rules.any"][0]

    many = {"all": [{"any": [FRENCH] * 60}] * 2}
    response = _create(manager, rules=many)
    assert response.status_code == 400 and "rules" in response.json()["fields"]


def test_nul_characters_are_a_400(manager):
    for rules in (
        {"field": "locale", "op": "eq", "value": "f\x00r"},
        {"field": "attributes.a\x00b", "op": "eq", "value": "x"},
    ):
        response = _create(manager, rules=rules)
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "validation_error"
    response = _create(manager, name="bad\x00name")
    assert response.status_code == 400
    assert not Segment.objects.exists()


def test_who_may(manager, make_service_token, make_user_token):
    assert _client().get("/api/v1/segments").status_code == 401
    assert _client().post("/api/v1/segments", {}, format="json").status_code == 401
    sender = _client(make_service_token("billing", ["notifications:send"]))
    for response in (sender.get("/api/v1/segments"), _create(sender)):
        assert response.status_code == 403
        assert response.json()["code"] == "scope_missing"
    alice = _client(make_user_token("alice"))
    assert alice.get("/api/v1/segments").status_code == 403
    segment_id = _create(manager).json()["id"]
    assert sender.get(f"/api/v1/segments/{segment_id}/preview").status_code == 403
    assert manager.get(f"/api/v1/segments/{segment_id}/preview").status_code == 200
    staff = _client(make_user_token("root", staff=True))
    assert staff.get(f"/api/v1/segments/{segment_id}").status_code == 200
