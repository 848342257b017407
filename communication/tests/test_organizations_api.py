"""``GET /api/v1/organizations/{id}`` (members of it or of its ancestors, services with
``users:read``; everyone else the 404 of an unknown id), its schema, and ``issue_token
--organization``."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from communication.auth import tokens
from communication.models import Organization, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    acme = Organization.objects.create(
        id="acme", name="Acme", direct_scope="organization", broadcast_roles=["admin"]
    )
    emea = Organization.objects.create(id="acme-emea", name="EMEA", parent=acme)
    Organization.objects.create(
        id="acme-paris", name="Paris", parent=emea, group_create_roles=["manager"]
    )
    Organization.objects.create(id="acme-apac", name="APAC", parent=acme)
    Organization.objects.create(id="globex", name="Globex")


def client(token: str) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return c


def member(make_user_token, name: str, org: str) -> APIClient:
    return client(make_user_token(name, organization=org))


PARIS = {
    "id": "acme-paris",
    "name": "Paris",
    "parent_id": "acme-emea",
    "policy": {
        "direct_scope": "organization",
        "group_create_roles": ["manager"],
        "broadcast_roles": ["admin"],
    },
}


def test_members_of_it_and_of_its_ancestors_see_it(acme, make_user_token):
    for name, org in (("pia", "acme-paris"), ("emil", "acme-emea"), ("ada", "acme")):
        response = member(make_user_token, name, org).get("/api/v1/organizations/acme-paris")
        assert response.status_code == 200, (org, response.content)
        assert response.json() == PARIS
    top = member(make_user_token, "ada", "acme").get("/api/v1/organizations/acme")
    assert top.json()["parent_id"] is None
    assert top.json()["policy"]["group_create_roles"] == []


def test_others_get_the_answer_of_an_unknown_id(acme, make_user_token):
    nothing = member(make_user_token, "pia", "acme-paris").get("/api/v1/organizations/no-such-org")
    assert nothing.status_code == 404
    assert nothing.json()["code"] == "unknown_organization"
    for name, org, target in (
        ("pia", "acme-paris", "acme-emea"),  # a parent: not a member of it
        ("pia", "acme-paris", "acme"),
        ("apu", "acme-apac", "acme-paris"),  # a sibling's branch
        ("gus", "globex", "acme"),  # another tree
        ("nobody", "", "acme"),  # no organization
    ):
        response = member(make_user_token, name, org).get(f"/api/v1/organizations/{target}")
        assert (response.status_code, response.json()) == (404, nothing.json()), (name, target)


@pytest.mark.parametrize("bad", ["a%20b", "x" * 200, "%2F", "..", "acme%0A", "%00"])
def test_bad_ids_are_a_404_never_a_500(acme, make_user_token, make_service_token, bad):
    for c in (
        member(make_user_token, "ada", "acme"),
        client(make_service_token("directory", ["users:read"])),
    ):
        response = c.get(f"/api/v1/organizations/{bad}")
        if bad == "%00":  # the edge refuses a NUL anywhere in a request
            assert (response.status_code, response.json()["code"]) == (400, "validation_error")
            continue
        assert response.status_code == 404, (bad, response.content)
        assert response.json()["code"] in ("unknown_organization", "not_found")


def test_services_with_users_read_see_any(acme, make_service_token):
    reader = client(make_service_token("directory", ["users:read"]))
    assert reader.get("/api/v1/organizations/acme-paris").json() == PARIS
    assert reader.get("/api/v1/organizations/nope").status_code == 404
    other = client(make_service_token("billing", ["notifications:send"]))
    refused = other.get("/api/v1/organizations/acme-paris")
    assert refused.status_code == 403
    assert refused.json()["code"] == "scope_missing"
    assert APIClient().get("/api/v1/organizations/acme").status_code == 401


def test_me_keeps_returning_the_organization(acme, make_user_token):
    me = member(make_user_token, "pia", "acme-paris").get("/api/v1/me")
    assert me.json()["organization"] == "acme-paris"


def test_the_schema_describes_it():
    schema = APIClient().get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/organizations/{organization_id}/"]["get"]
    assert operation["operationId"] == "organizations_retrieve"
    assert {"200", "401", "403", "404"} <= set(operation["responses"])
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(body["properties"]) == {"id", "name", "parent_id", "policy"}


def run_issue_token(*args: str) -> str:
    out = io.StringIO()
    call_command("issue_token", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]


def test_issue_token_sets_the_organization_claim(acme):
    token = run_issue_token("--user", "olga", "--organization", "acme-emea")
    claims = tokens.verify(token)
    assert claims["organization"] == "acme-emea"
    assert User.objects.get(external_id="olga").organization == "acme-emea"
    response = client(token).get("/api/v1/organizations/acme-emea")
    assert response.status_code == 200
    assert response.json()["parent_id"] == "acme"
    # Left alone when not given; refused when it cannot be an id.
    claims = tokens.verify(run_issue_token("--user", "olga", "--name", "Olga"))
    assert claims["organization"] == "acme-emea"
    with pytest.raises(CommandError, match=re.escape("--organization")):
        run_issue_token("--user", "olga", "--organization", "a/b")
