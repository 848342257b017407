"""Organizations: the tree in one indexed query, the policy inherited down it, ``may_contact``,
and unknown organizations imported from a live identity-service fake (cached)."""

from __future__ import annotations

import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from werkzeug import Response

from communication import identity, organizations
from communication.models import AuditEntry, Organization, User

pytestmark = pytest.mark.django_db


def tree() -> dict[str, Organization]:
    """acme ─ emea ─ paris, acme ─ apac; globex apart."""
    acme = Organization.objects.create(id="acme", name="Acme")
    emea = Organization.objects.create(id="acme-emea", name="EMEA", parent=acme)
    paris = Organization.objects.create(id="acme-paris", name="Paris", parent=emea)
    apac = Organization.objects.create(id="acme_apac", name="APAC", parent=acme)
    globex = Organization.objects.create(id="globex", name="Globex")
    # acme_apac's "_" is a LIKE wildcard: "acmeXapac" must not be taken for it.
    Organization.objects.create(id="acmeXapac", name="Lookalike")
    return {o.id: o for o in (acme, emea, paris, apac, globex)}


def paths() -> dict[str, str]:
    return dict(Organization.objects.values_list("id", "path"))


def test_the_path_is_kept_by_the_database():
    tree()
    assert paths()["acme-paris"] == "acme/acme-emea/acme-paris"
    assert paths()["acme_apac"] == "acme/acme_apac"
    # Moving EMEA under APAC takes Paris along, whoever writes the row.
    Organization.objects.filter(id="acme-emea").update(parent_id="acme_apac")
    assert paths()["acme-emea"] == "acme/acme_apac/acme-emea"
    assert paths()["acme-paris"] == "acme/acme_apac/acme-emea/acme-paris"


def test_a_parent_cannot_be_a_descendant():
    orgs = tree()
    acme = orgs["acme"]
    acme.parent = orgs["acme-paris"]
    with pytest.raises(ValidationError, match="cycle"):
        organizations.organization_save(organization=acme, before={})
    # The database refuses it too, whoever writes.
    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.filter(id="acme").update(parent_id="acme-paris")
    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.filter(id="acme").update(parent_id="acme")
    assert paths()["acme"] == "acme"


def test_everything_under_an_organization_is_one_indexed_query(django_assert_num_queries):
    tree()
    with django_assert_num_queries(1):
        assert set(organizations.organizations_within("acme").values_list("id", flat=True)) == {
            "acme",
            "acme-emea",
            "acme-paris",
            "acme_apac",
        }
    with django_assert_num_queries(1):
        assert {o.id for o in organizations.organizations_within("acme-emea")} == {
            "acme-emea",
            "acme-paris",
        }
    with django_assert_num_queries(1):
        assert [o.id for o in organizations.organizations_within("acme-paris")] == ["acme-paris"]
    assert not organizations.organizations_within("nowhere").exists()
    # It composes: the members of acme's tree, in one statement.
    User.objects.create(username="p", external_id="p", organization="acme-paris")
    User.objects.create(username="g", external_id="g", organization="globex")
    with django_assert_num_queries(1):
        members = User.objects.filter(
            organization__in=organizations.organizations_within("acme").values("id")
        )
        assert [u.external_id for u in members] == ["p"]
    # PostgreSQL reads the path index, not the whole table.
    sql, params = organizations.organizations_within("acme").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "organization_path" in plan, plan


def test_ancestors_and_top_level_in_one_query(django_assert_num_queries):
    tree()
    with django_assert_num_queries(1):
        assert [o.id for o in organizations.ancestors("acme-paris")] == ["acme", "acme-emea"]
    with django_assert_num_queries(1):
        assert organizations.top_level("acme-paris") == "acme"
    assert organizations.top_level("globex") == "globex"
    assert organizations.top_level("nowhere") is None
    assert organizations.ancestors("acme") == []
    # The ancestors are primary-key look-ups: no scan of the table.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {organizations.LINEAGE_SQL}", ["acme-paris"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan, plan


def test_policy_is_inherited_unless_overridden(django_assert_num_queries):
    orgs = tree()
    default = organizations.organization_policy("acme-paris")
    assert default.as_dict() == {
        "direct_scope": "tree",
        "group_create_roles": [],
        "broadcast_roles": [],
    }
    Organization.objects.filter(id="acme").update(
        direct_scope="organization", broadcast_roles=["admin"]
    )
    Organization.objects.filter(id="acme-emea").update(group_create_roles=["manager"])
    Organization.objects.filter(id="acme-paris").update(direct_scope="anyone")
    with django_assert_num_queries(1):
        paris = organizations.organization_policy("acme-paris")
    assert paris.as_dict() == {
        "direct_scope": "anyone",
        "group_create_roles": ["manager"],
        "broadcast_roles": ["admin"],
    }
    assert paris.source == {
        "direct_scope": "acme-paris",
        "group_create_roles": "acme-emea",
        "broadcast_roles": "acme",
    }
    emea = organizations.organization_policy("acme-emea")
    assert emea.direct_scope == "organization"
    assert not emea.allows_group_create(["member"])
    assert emea.allows_group_create(["member", "manager"])
    assert emea.allows_broadcast(["admin"]) and not emea.allows_broadcast(["manager"])
    # An empty list overrides too: everyone creates groups in APAC.
    Organization.objects.filter(id="acme_apac").update(group_create_roles=[])
    assert organizations.organization_policy("acme_apac").allows_group_create([])
    assert organizations.organization_policy("globex") == organizations.Policy(
        source=dict.fromkeys(organizations.POLICY_FIELDS)
    )
    assert orgs  # the tree stands


def person(name: str, org: str = "") -> User:
    return User.objects.create(username=name, external_id=name, organization=org)


def test_may_contact_follows_the_initiators_direct_scope():
    tree()
    emea, apac = person("emea-1", "acme-emea"), person("apac-1", "acme_apac")
    paris, globex = person("paris-1", "acme-paris"), person("globex-1", "globex")
    loner = person("loner")
    assert organizations.may_contact(emea, apac) == (True, "direct_scope=tree")
    assert organizations.may_contact(emea, paris) == (True, "direct_scope=tree")
    assert organizations.may_contact(emea, globex) == (False, "direct_scope=tree")
    assert organizations.may_contact(emea, loner) == (False, "direct_scope=tree")
    assert organizations.may_contact(loner, emea) == (False, "direct_scope=tree")
    assert organizations.may_contact(loner, person("loner-2")) == (True, "direct_scope=tree")

    Organization.objects.filter(id="acme").update(direct_scope="organization")
    assert organizations.may_contact(emea, apac) == (False, "direct_scope=organization")
    assert organizations.may_contact(emea, person("emea-2", "acme-emea"))[0]
    assert organizations.may_contact(emea, globex) == (False, "direct_scope=organization")

    Organization.objects.filter(id="acme-emea").update(direct_scope="anyone")
    assert organizations.may_contact(emea, globex) == (True, "direct_scope=anyone")
    assert organizations.may_contact(emea, loner) == (True, "direct_scope=anyone")
    # The initiator's organization decides: Paris inherits anyone from EMEA, APAC does not.
    assert organizations.may_contact(paris, globex)[0]
    assert not organizations.may_contact(apac, emea)[0]


def test_without_organizations_nothing_is_decided(django_assert_num_queries):
    a, b = person("a", "acme"), person("b", "somewhere-else")
    assert organizations.may_contact(a, b) == (True, "no_organizations")
    assert organizations.may_contact(person("c"), a) == (True, "no_organizations")


def test_policy_is_validated():
    org = Organization(id="bad", direct_scope="galaxy")
    with pytest.raises(ValidationError):
        organizations.organization_save(organization=org)
    org = Organization(id="bad", group_create_roles=["a", "a"])
    with pytest.raises(ValidationError, match="twice"):
        organizations.organization_save(organization=org)
    for bad_id in ("a/b", "with space", "", "x" * 129, "nul\x00"):
        with pytest.raises(ValidationError):
            organizations.organization_save(organization=Organization(id=bad_id))
    assert not Organization.objects.exists()


def test_saving_is_audited():
    acme = organizations.organization_save(organization=Organization(id="acme", name="Acme"))
    before = organizations.organization_snapshot(acme)
    acme.direct_scope = "organization"
    acme.broadcast_roles = ["admin"]
    organizations.organization_save(organization=acme, before=before)
    entries = list(
        AuditEntry.objects.filter(object_type="communication.organization").order_by("id")
    )
    assert [e.action for e in entries] == ["organization.create", "organization.change"]
    assert entries[1].changes == {
        "broadcast_roles": [None, ["admin"]],
        "direct_scope": [None, "organization"],
    }


# ------------------------------------------------------------------------- identity service


@pytest.fixture
def identity_orgs(identity_provider):
    """The identity fake, answering ``GET /organizations/{id}`` from ``orgs``; ``hits`` counts."""
    state = {"orgs": {}, "hits": []}

    def answer(request):
        org_id = request.path.rsplit("/", 1)[1]
        state["hits"].append(org_id)
        if identity_provider.down:
            return Response("unavailable", status=503)
        if request.headers.get("Authorization") != "Bearer client-token":
            return Response("no token", status=401)
        if org_id not in state["orgs"]:
            return Response(json.dumps({"detail": "not found"}), status=404)
        return Response(json.dumps(state["orgs"][org_id]), content_type="application/json")

    identity_provider.server.expect_request(
        re.compile(r"^/organizations/[^/]+$")
    ).respond_with_handler(answer)
    state["orgs"].update(
        {
            "acme": {"id": "acme", "name": "Acme", "parent_id": None},
            "acme-emea": {"id": "acme-emea", "name": "EMEA", "parent_id": "acme"},
            "acme-paris": {"id": "acme-paris", "name": "Paris", "parent_id": "acme-emea"},
        }
    )
    return state


def test_an_unknown_organization_and_its_parents_are_imported(identity_orgs):
    paris = organizations.organization_resolve("acme-paris")
    assert paris is not None and paris.name == "Paris"
    assert paths() == {
        "acme": "acme",
        "acme-emea": "acme/acme-emea",
        "acme-paris": "acme/acme-emea/acme-paris",
    }
    assert identity_orgs["hits"] == ["acme-paris", "acme-emea", "acme"]
    assert AuditEntry.objects.filter(action="organization.import").count() == 3
    # Known now: no more calls.
    assert organizations.organization_resolve("acme-paris") == paris
    assert len(identity_orgs["hits"]) == 3


def test_a_new_child_of_a_known_parent_asks_only_for_itself(identity_orgs):
    Organization.objects.create(id="acme", name="Acme")
    identity_orgs["orgs"]["acme_apac"] = {"id": "acme_apac", "name": "APAC", "parent_id": "acme"}
    assert organizations.organization_resolve("acme_apac").path == "acme/acme_apac"
    assert identity_orgs["hits"] == ["acme_apac"]


def test_identity_answers_are_cached(identity_orgs):
    assert identity.organization_get("acme") == {"id": "acme", "name": "Acme", "parent_id": None}
    assert identity.organization_get("acme")["name"] == "Acme"
    assert identity.organization_get("nowhere") is None
    assert identity.organization_get("nowhere") is None
    assert identity_orgs["hits"] == ["acme", "nowhere"]
    assert organizations.organization_resolve("nowhere") is None


def test_a_cyclic_answer_ends_the_chain(identity_orgs):
    identity_orgs["orgs"]["loop-a"] = {"id": "loop-a", "name": "A", "parent_id": "loop-b"}
    identity_orgs["orgs"]["loop-b"] = {"id": "loop-b", "name": "B", "parent_id": "loop-a"}
    assert organizations.organization_resolve("loop-a").path == "loop-b/loop-a"


def test_a_token_naming_an_unknown_organization_imports_it(
    identity_provider, identity_orgs, api_client
):
    identity_provider.users["zed"] = {"sub": "zed"}
    token = identity_provider.token("zed", organization="acme-paris")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = api_client.get("/api/v1/me")
    assert response.status_code == 200, response.content
    assert response.json()["organization"] == "acme-paris"
    assert paths()["acme-paris"] == "acme/acme-emea/acme-paris"
    # Known now: the next requests ask nothing.
    for _ in range(2):
        assert api_client.get("/api/v1/me").status_code == 200
    assert identity_orgs["hits"] == ["acme-paris", "acme-emea", "acme"]


def test_identity_down_does_not_fail_authentication(identity_provider, identity_orgs):
    identity_provider.down = True
    with pytest.raises(identity.IdentityUnavailableError):
        organizations.organization_resolve("acme")
    organizations.organization_sync_claim("acme")  # logged, not raised
    hits = len(identity_orgs["hits"])
    organizations.organization_sync_claim("acme")  # backing off: no call
    assert len(identity_orgs["hits"]) == hits
    assert not Organization.objects.exists()


def test_a_service_reads_an_organization_imported_on_the_way(
    identity_provider, identity_orgs, api_client
):
    token = identity_provider.token("directory", client_id="directory", scope="users:read")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = api_client.get("/api/v1/organizations/acme-emea")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "id": "acme-emea",
        "name": "EMEA",
        "parent_id": "acme",
        "policy": {"direct_scope": "tree", "group_create_roles": [], "broadcast_roles": []},
    }
    assert api_client.get("/api/v1/organizations/unheard-of").status_code == 404
    identity_provider.down = True
    down = api_client.get("/api/v1/organizations/acme-somewhere")
    assert (down.status_code, down.json()["code"]) == (503, "unavailable")
    # Known locally: answered while the identity service is down.
    assert api_client.get("/api/v1/organizations/acme-emea").status_code == 200
