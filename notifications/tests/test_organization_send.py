"""Organization-wide sends: ``{"organization": id, "include_descendants": bool, "roles": [...]}``
in ``POST /api/v1/notifications`` and ``/bulk``, expanded to the members known here and those the
identity service lists (a live stand-in on a local HTTP server), each once, with their
preferences; the ``notifications:broadcast`` scope; the errors."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient
from werkzeug import Response

from communication.models import Organization, User
from notifications.models import BulkRecipient, Notification, NotificationPreference
from notifications.services import bulk
from notifications.tests.conftest import member, reached

pytestmark = pytest.mark.django_db

CONTENT = {"subject": "Maintenance", "title": "Maintenance", "body": "Tonight at 22:00."}
BROADCAST = ("notifications:send", "notifications:broadcast")
# The organization, its local members, the listed members created (those new) and read; then
# the send's own (as in test_query_budgets: preferences, quiet hours, devices, suppressions,
# the one write, and for in-app the unread counts and the events).
ORG_SEND = 4 + 5 + 2


@pytest.fixture
def acme(db):
    acme = Organization.objects.create(id="acme", name="Acme")
    emea = Organization.objects.create(id="acme-emea", name="EMEA", parent=acme)
    Organization.objects.create(id="acme-paris", name="Paris", parent=emea)
    Organization.objects.create(id="acme-apac", name="APAC", parent=acme)
    Organization.objects.create(id="globex", name="Globex")


@pytest.fixture
def broadcaster(request, make_service_token):
    """A service with ``notifications:broadcast``, its token signed by the identity service
    when the test has one."""
    if "identity_provider" in request.fixturenames:
        provider = request.getfixturevalue("identity_provider")
        token = provider.token("ops", client_id="ops", scope=" ".join(BROADCAST))
    else:
        token = make_service_token("ops", BROADCAST)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


class Listing:
    """The identity service's members of ``acme`` (with its descendants), in pages of two."""

    def __init__(self, identity_provider, members: list[dict]):
        self.members = members
        self.hits: list[dict] = []
        self.server = identity_provider.server
        self.server.expect_request("/organizations/acme/members").respond_with_handler(self.page)

    def page(self, request):
        self.hits.append(dict(request.args))
        if request.headers.get("Authorization") != "Bearer client-token":
            return Response("no token", status=401)
        start = int(request.args.get("after", 0))
        nxt = None
        if start + 2 < len(self.members):
            nxt = self.server.url_for(f"/organizations/acme/members?after={start + 2}")
        body = {"results": self.members[start : start + 2], "next": nxt}
        return Response(json.dumps(body), content_type="application/json")


def send(client, recipients, **body):
    body = {"recipients": recipients, "category": "alerts", "content": CONTENT, **body}
    return client.post("/api/v1/notifications", body, format="json")


def test_a_send_to_acme_and_below_reaches_every_member_once_with_their_preferences(
    acme, identity_provider, broadcaster
):
    for name, org in [("ada", "acme"), ("eve", "acme-emea"), ("pia", "acme-paris")]:
        member(name, org)
    member("kai", "acme-apac", roles=())
    member("gus", "globex")
    # Eve turned off email for alerts: in-app only.
    eve = User.objects.get(external_id="eve")
    NotificationPreference.objects.create(
        user=eve, category_id="alerts", channel="email", enabled=False
    )
    listing = Listing(
        identity_provider,
        [
            {"id": "eve", "email": "eve@example.com", "organization": "acme-emea"},
            {"id": "ada", "email": "ada@example.com", "organization": "acme"},
            {
                "id": "new",
                "email": "new@example.com",
                "name": "Neo",
                "organization": "acme-apac",
                "roles": ["member"],
            },
        ],
    )
    response = send(
        broadcaster,
        # Ada named on her own as well: one notification all the same.
        [{"user_id": "ada"}, {"organization": "acme", "include_descendants": True}],
        channels=["email", "in_app"],
    )
    got = reached(response)
    assert set(got) == {"ada", "eve", "pia", "kai", "new"}
    assert got["eve"]["email"]["status"] == "skipped"
    assert "opted out" in got["eve"]["email"]["reason"]
    assert got["eve"]["in_app"]["status"] == "delivered"
    for name in ("ada", "pia", "kai", "new"):
        assert got[name]["email"]["status"] == "queued", name
        assert got[name]["in_app"]["status"] == "delivered", name
    # The member only the identity service knew is a user here now, with the listed profile.
    new = User.objects.get(external_id="new")
    assert (new.email, new.name, new.organization) == ("new@example.com", "Neo", "acme-apac")
    assert Notification.objects.filter(user=new).count() == 1
    assert listing.hits[0] == {"include_descendants": "true"}
    assert len(listing.hits) == 2  # both pages
    recipients = [n["recipient"] for n in response.json()["notifications"]]
    assert {"user_id": "pia", "via_organization": "acme"} in recipients


def test_without_descendants_only_the_organization_itself(acme, broadcaster):
    member("ada", "acme")
    member("eve", "acme-emea")
    got = reached(send(broadcaster, [{"organization": "acme"}], channels=["in_app"]))
    assert set(got) == {"ada"}


def test_roles_keep_the_members_holding_any_of_them(acme, identity_provider, broadcaster):
    member("ada", "acme", roles=["manager"])
    member("eve", "acme-emea", roles=["member", "admin"])
    member("pia", "acme-paris", roles=["member"])
    Listing(
        identity_provider,
        [
            {"id": "lee", "organization": "acme-apac", "roles": ["manager"]},
            {"id": "max", "organization": "acme-apac", "roles": ["member"]},
        ],
    )
    spec = {"organization": "acme", "include_descendants": True, "roles": ["manager", "admin"]}
    got = reached(send(broadcaster, [spec], channels=["in_app"]))
    assert set(got) == {"ada", "eve", "lee"}
    assert not User.objects.filter(external_id="max").exists()


@pytest.mark.parametrize("size", [3, 30])
def test_the_queries_do_not_grow_with_the_members(
    acme, identity_provider, broadcaster, size, django_assert_num_queries
):
    orgs = ["acme", "acme-emea", "acme-paris"]
    for i in range(size):
        member(f"m{i}", orgs[i % 3])
    # As many again known only to the identity service, and a few it shares with us.
    Listing(
        identity_provider,
        [{"id": f"m{i}"} for i in range(0, size, 3)]
        + [{"id": f"x{i}", "email": f"x{i}@example.com"} for i in range(size)],
    )
    spec = [{"organization": "acme", "include_descendants": True}]
    send(broadcaster, [{"user_id": "m0"}])  # warm-up: the category's cache
    with django_assert_num_queries(ORG_SEND):
        got = reached(send(broadcaster, spec, channels=["email", "in_app"]))
    assert len(got) == 2 * size


def test_without_the_broadcast_scope_it_is_refused(acme, sender):
    member("ada", "acme")
    for path in ("/api/v1/notifications", "/api/v1/notifications/bulk"):
        response = sender.post(
            path,
            {"recipients": [{"organization": "acme"}], "content": CONTENT},
            format="json",
        )
        assert response.status_code == 403, path
        assert response.json()["code"] == "scope_missing"
        assert "notifications:broadcast" in response.json()["detail"]
    assert not Notification.objects.exists()


def test_an_unknown_organization_is_a_400(acme, broadcaster):
    response = send(broadcaster, [{"organization": "initech"}])
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_organization"
    assert not Notification.objects.exists()


def test_an_organization_the_identity_service_does_not_know_is_a_400(
    acme, identity_provider, broadcaster
):
    identity_provider.server.expect_request("/organizations/initech").respond_with_json(
        {"detail": "not found"}, status=404
    )
    response = send(broadcaster, [{"organization": "initech"}])
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_organization"


@pytest.mark.parametrize(
    "spec",
    [
        {"organization": 7},
        {"organization": "a/b"},
        {"organization": "acme", "include_descendants": "yes"},
        {"organization": "acme", "roles": "manager"},
        {"organization": "acme", "roles": [1]},
        {"organization": "acme", "user_id": "ada"},
    ],
)
def test_bad_organization_recipients_are_validation_errors(acme, broadcaster, spec):
    response = send(broadcaster, [spec])
    assert response.status_code == 400, spec
    assert response.json()["code"] == "validation_error"


def test_more_members_than_a_single_send_takes_is_a_413_pointing_to_bulk(
    acme, broadcaster, settings
):
    settings.NOTIFICATIONS_MAX_RECIPIENTS = 3
    for i in range(4):
        member(f"m{i}", "acme")
    response = send(broadcaster, [{"organization": "acme"}])
    assert response.status_code == 413
    assert "/api/v1/notifications/bulk" in response.json()["detail"]
    assert not Notification.objects.exists()


def test_the_bulk_endpoint_takes_an_organization(acme, broadcaster):
    for i in range(5):
        member(f"m{i}", "acme-emea")
    member("gus", "globex")
    response = broadcaster.post(
        "/api/v1/notifications/bulk",
        {
            "recipients": [
                {"email": "ext@example.com"},
                {"user_id": "m0"},
                {"organization": "acme", "include_descendants": True, "data": {"x": 1}},
            ],
            "content": CONTENT,
            "channels": ["in_app"],
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 6  # the address, m0, and m1..m4 once each
    rows = list(BulkRecipient.objects.order_by("position"))
    assert [r.position for r in rows] == [0, 1, 3, 4, 5, 6]
    assert rows[-1].data == {"x": 1}
    bulk.bulk_fan_out(response.json()["batch_id"])
    users = Notification.objects.filter(user__isnull=False).values_list(
        "user__external_id", flat=True
    )
    assert sorted(users) == ["m0", "m1", "m2", "m3", "m4"]


def test_members_the_identity_service_cannot_list_refuse_the_send(
    acme, identity_provider, broadcaster
):
    member("ada", "acme")
    identity_provider.server.expect_request("/organizations/acme/members").respond_with_data(
        "unavailable", status=503
    )
    response = send(broadcaster, [{"organization": "acme"}])
    assert response.status_code == 503
    assert "members" in response.json()["detail"]
    assert not Notification.objects.exists()


def test_a_next_page_off_the_identity_service_is_not_followed(acme, identity_provider, broadcaster):
    identity_provider.server.expect_request("/organizations/acme/members").respond_with_json(
        {"results": [{"id": "ada"}], "next": "http://127.0.0.1:9/elsewhere"}
    )
    response = send(broadcaster, [{"organization": "acme"}])
    assert response.status_code == 503
    assert not User.objects.filter(external_id="ada").exists()
