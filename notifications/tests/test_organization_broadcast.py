"""A user's send to a whole organization: ``POST /api/v1/organizations/{id}/broadcast``, allowed
to members of it (or of one above it) holding one of its ``broadcast_roles``, sent through the
one send path (each member once, with their preferences); the refusals and bad bodies."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from communication.auth import tokens
from communication.models import Organization, User
from notifications.models import Notification, NotificationPreference, NotificationRequest
from notifications.tests.conftest import member, reached

pytestmark = pytest.mark.django_db

CONTENT = {"subject": "Maintenance", "title": "Maintenance", "body": "Tonight at 22:00."}


@pytest.fixture
def acme(db):
    """acme (only ``comms`` may broadcast, for the whole tree) > acme-emea > acme-paris, and
    acme-apac; globex beside it."""
    acme = Organization.objects.create(id="acme", name="Acme", broadcast_roles=["comms"])
    emea = Organization.objects.create(id="acme-emea", name="EMEA", parent=acme)
    Organization.objects.create(id="acme-paris", name="Paris", parent=emea)
    Organization.objects.create(id="acme-apac", name="APAC", parent=acme)
    Organization.objects.create(id="globex", name="Globex", broadcast_roles=["comms"])


def client_of(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_user_token(user)}")
    return client


def broadcast(client: APIClient, org: str, **body):
    body = {"category": "alerts", "channels": ["in_app"], "content": CONTENT, **body}
    return client.post(f"/api/v1/organizations/{org}/broadcast", body, format="json")


def test_a_comms_member_reaches_every_member_of_acme_and_below_once_with_their_preferences(acme):
    sam = member("sam", "acme", roles=["member", "comms"])
    for name, org in [("ada", "acme"), ("eve", "acme-emea"), ("pia", "acme-paris")]:
        member(name, org)
    member("kai", "acme-apac", roles=())
    member("gus", "globex")
    # Eve turned off email for alerts: in-app only.
    NotificationPreference.objects.create(
        user=User.objects.get(external_id="eve"),
        category_id="alerts",
        channel="email",
        enabled=False,
    )
    response = broadcast(
        client_of(sam), "acme", channels=["email", "in_app"], include_descendants=True
    )
    got = reached(response)
    assert set(got) == {"sam", "ada", "eve", "pia", "kai"}
    assert got["eve"]["email"]["status"] == "skipped"
    assert "opted out" in got["eve"]["email"]["reason"]
    assert got["eve"]["in_app"]["status"] == "delivered"
    for name in ("sam", "ada", "pia", "kai"):
        assert got[name]["email"]["status"] == "queued", name
        assert got[name]["in_app"]["status"] == "delivered", name
    body = response.json()
    assert body["category"] == "alerts" and body["status"]
    recipients = [n["recipient"] for n in body["notifications"]]
    assert {"user_id": "pia", "via_organization": "acme"} in recipients
    # The request is the user's, never a service's: its caller names them.
    request = NotificationRequest.objects.get(id=body["request_id"])
    assert request.caller == "user:sam"
    # Pia sees it in her inbox.
    pia = client_of(User.objects.get(external_id="pia"))
    unread = pia.get("/api/v1/notifications/unread").json()
    assert [n["title"] for n in unread["results"]] == ["Maintenance"]


def test_roles_and_without_descendants(acme):
    sam = member("sam", "acme", roles=["comms"])
    member("ada", "acme", roles=["manager"])
    member("bo", "acme", roles=["member"])
    member("eve", "acme-emea", roles=["manager"])
    assert set(reached(broadcast(client_of(sam), "acme", roles=["manager"]))) == {"ada"}


def test_a_user_without_a_broadcast_role_is_refused_and_nothing_is_stored(acme):
    ada = member("ada", "acme", roles=["member", "manager"])
    member("eve", "acme-emea")
    response = broadcast(client_of(ada), "acme", include_descendants=True)
    assert response.status_code == 403, response.content
    assert response.json()["code"] == "communication_not_allowed"
    assert response.json()["detail"].startswith("broadcast_roles: comms")
    assert not NotificationRequest.objects.exists()
    assert not Notification.objects.exists()


def test_the_default_policy_lets_no_user_broadcast(db):
    Organization.objects.create(id="initech", name="Initech")
    boss = member("boss", "initech", roles=["admin", "comms"])
    response = broadcast(client_of(boss), "initech")
    assert response.status_code == 403
    assert response.json()["detail"].startswith("broadcast_roles: no role")
    assert not Notification.objects.exists()


def test_an_organization_the_user_is_not_in_is_unknown(acme):
    gus = member("gus", "globex", roles=["comms"])
    member("ada", "acme")
    theirs = broadcast(client_of(gus), "acme", include_descendants=True)
    nothing = broadcast(client_of(gus), "no-such-org")
    assert theirs.status_code == nothing.status_code == 404
    assert theirs.json() == nothing.json()
    assert theirs.json()["code"] == "unknown_organization"
    # The one above yours is not yours either (as GET /organizations/{id} answers).
    eve = member("eve", "acme-emea", roles=["comms"])
    assert broadcast(client_of(eve), "acme").status_code == 404
    # Nor is anything answered to a user without an organization.
    lone = member("lone", "", roles=["comms"])
    assert broadcast(client_of(lone), "acme").status_code == 404
    assert not Notification.objects.exists()


def test_broadcast_roles_are_inherited_and_overridden_down_the_tree(acme):
    # acme-emea inherits acme's ["comms"]: an EMEA comms member reaches EMEA and Paris.
    eve = member("eve", "acme-emea", roles=["comms"])
    member("pia", "acme-paris")
    member("ada", "acme")
    got = reached(broadcast(client_of(eve), "acme-emea", include_descendants=True))
    assert set(got) == {"eve", "pia"}
    # A member of acme may address an organization under it, by the policy in force there.
    sam = member("sam", "acme", roles=["comms"])
    assert set(reached(broadcast(client_of(sam), "acme-paris"))) == {"pia"}
    # Paris sets its own (empty: nobody): refused for both, whatever acme says.
    Organization.objects.filter(id="acme-paris").update(broadcast_roles=[])
    for user in (eve, sam):
        response = broadcast(client_of(user), "acme-paris")
        assert response.status_code == 403, response.content
        assert response.json()["code"] == "communication_not_allowed"
    # EMEA names another role: it is that role, not acme's, that applies to EMEA.
    Organization.objects.filter(id="acme-emea").update(broadcast_roles=["emea-lead"])
    assert broadcast(client_of(eve), "acme-emea").status_code == 403
    lead = member("lea", "acme-emea", roles=["emea-lead"])
    assert set(reached(broadcast(client_of(lead), "acme-emea"))) == {"eve", "lea"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": None, "template": None}, "template"),
        ({"channels": ["pigeon"]}, "channels"),
        ({"include_descendants": "maybe"}, "include_descendants"),
        ({"roles": "manager"}, "roles"),
        ({"roles": [""]}, "roles"),
        ({"priority": "whenever"}, "priority"),
        ({"recipients": [{"user_id": "gus"}]}, "recipients"),
        ({"scheduled_at": "2099-01-01T00:00:00Z"}, "scheduled_at"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field(acme, body, field):
    sam = member("sam", "acme", roles=["comms"])
    payload = {"category": "alerts", "channels": ["in_app"], "content": CONTENT, **body}
    payload = {k: v for k, v in payload.items() if v is not None}
    response = client_of(sam).post("/api/v1/organizations/acme/broadcast", payload, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "validation_error"
    # A path such as roles[0] for an item.
    fields = response.json()["fields"]
    assert any(key.split("[")[0] == field for key in fields), fields
    assert not NotificationRequest.objects.exists()


def test_services_use_the_send_api_not_this_one(acme, make_service_token):
    client = APIClient()
    token = make_service_token("ops", ("notifications:send", "notifications:broadcast"))
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = broadcast(client, "acme")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert not NotificationRequest.objects.exists()


def test_a_replay_with_the_same_idempotency_key_sends_once(acme):
    sam = member("sam", "acme", roles=["comms"])
    member("ada", "acme")
    client = client_of(sam)
    first = client.post(
        "/api/v1/organizations/acme/broadcast",
        {"category": "alerts", "channels": ["in_app"], "content": CONTENT},
        format="json",
        HTTP_IDEMPOTENCY_KEY="maintenance-1",
    )
    again = client.post(
        "/api/v1/organizations/acme/broadcast",
        {"category": "alerts", "channels": ["in_app"], "content": CONTENT},
        format="json",
        HTTP_IDEMPOTENCY_KEY="maintenance-1",
    )
    assert first.status_code == again.status_code == 202
    assert again["Idempotent-Replay"] == "true"
    assert again.json()["request_id"] == first.json()["request_id"]
    assert Notification.objects.filter(user__external_id="ada").count() == 1


def test_the_queries_do_not_grow_with_the_members(acme):
    """The check (the organization, its policy) and the send cost the same for 3 members as
    for 30."""
    sam = member("sam", "acme", roles=["comms"])
    client = client_of(sam)
    # The first send's one-off work (the sign-in, the category read once per process).
    reached(broadcast(client, "acme"))
    counts = []
    for size in (3, 30):
        User.objects.exclude(pk=sam.pk).delete()
        for i in range(size - 1):
            member(f"m{size}-{i}", "acme-emea" if i % 2 else "acme")
        with CaptureQueriesContext(connection) as queries:
            got = reached(broadcast(client, "acme", include_descendants=True))
        assert len(got) == size
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
