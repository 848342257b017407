"""The organizations' communication policy in messaging: who may open a conversation with whom,
who may create groups, and where support conversations go (issue 23). On real PostgreSQL, the
tree written through ``organization_save``; the websocket on a live uvicorn process."""

from __future__ import annotations

import json
import uuid

import pytest

from communication.exceptions import CommunicationNotAllowedError
from communication.models import RealtimeEvent
from communication.org_models import Organization
from communication.organizations import organization_save, organization_snapshot
from messaging import selectors, services
from messaging.models import Conversation, Participant
from messaging.tests.conftest import create_conversation, make_user, of_type, recv_until, sockets


def org(org_id: str, parent: str | None = None, **policy) -> Organization:
    return organization_save(
        organization=Organization(id=org_id, name=org_id.title(), parent_id=parent, **policy)
    )


def set_policy(org_id: str, **policy) -> None:
    organization = Organization.objects.get(id=org_id)
    before = organization_snapshot(organization)
    for field, value in policy.items():
        setattr(organization, field, value)
    organization_save(organization=organization, before=before)


def tree(tag: str = "") -> dict[str, str]:
    """acme/{emea/paris, apac} and globex, another top-level organization."""
    ids = {n: f"{n}{tag}" for n in ("acme", "emea", "paris", "apac", "globex")}
    org(ids["acme"])
    org(ids["emea"], ids["acme"])
    org(ids["paris"], ids["emea"])
    org(ids["apac"], ids["acme"])
    org(ids["globex"])
    return ids


def refused(response, rule: str) -> None:
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["code"] == "communication_not_allowed", body
    assert body["detail"].startswith(rule), body


@pytest.mark.django_db
def test_direct_conversations_follow_the_direct_scope(as_user):
    ids = tree()
    emma = make_user("emma", organization=ids["emea"])
    aki = make_user("aki", organization=ids["apac"])
    make_user("ana", organization=ids["apac"])
    gus = make_user("gus", organization=ids["globex"])

    # tree (the default): the same top-level organization, not another one.
    existing = create_conversation(as_user(emma), participants=[aki.external_id])
    response = as_user(emma).post(
        "/api/v1/conversations", {"type": "direct", "participants": ["gus"]}, format="json"
    )
    refused(response, "direct_scope=tree")

    # organization: not even a sibling department.
    set_policy(ids["acme"], direct_scope="organization")
    before = Conversation.objects.count()
    response = as_user(emma).post(
        "/api/v1/conversations", {"type": "direct", "participants": ["ana"]}, format="json"
    )
    refused(response, "direct_scope=organization")
    response = as_user(emma).post(
        "/api/v1/conversations", {"type": "direct", "participants": ["gus"]}, format="json"
    )
    refused(response, "direct_scope=organization")
    assert Conversation.objects.count() == before, "nothing is created"
    # gus's organization says nothing either way: it is emma's that decides.
    assert gus.organization == ids["globex"]

    # History stays: the pair made under tree is still theirs, and they still write in it.
    response = as_user(emma).post(
        "/api/v1/conversations", {"type": "direct", "participants": ["aki"]}, format="json"
    )
    assert response.status_code == 200 and response.json()["id"] == existing["id"]
    response = as_user(aki).post(
        f"/api/v1/conversations/{existing['id']}/messages", {"content": "still here"}, format="json"
    )
    assert response.status_code == 201, response.content

    # anyone: open to other organizations too.
    set_policy(ids["acme"], direct_scope="anyone")
    create_conversation(as_user(emma), participants=["gus"])


@pytest.mark.django_db
def test_group_creation_and_adding_members_follow_the_policy(as_user):
    ids = tree()
    set_policy(ids["acme"], group_create_roles=["manager"])
    emma = make_user("emma", organization=ids["emea"])
    boss = make_user("boss", organization=ids["emea"], roles=["manager"])
    make_user("aki", organization=ids["apac"])
    make_user("gus", organization=ids["globex"])

    before = Conversation.objects.count()
    response = as_user(emma).post(
        "/api/v1/conversations",
        {"type": "group", "participants": ["aki"], "title": "Plans"},
        format="json",
    )
    refused(response, "group_create_roles")
    assert "manager" in response.json()["detail"]
    # A manager may, but only with people they may contact.
    response = as_user(boss).post(
        "/api/v1/conversations", {"type": "group", "participants": ["aki", "gus"]}, format="json"
    )
    refused(response, "direct_scope=tree")
    assert Conversation.objects.count() == before, "nothing is created"

    group = create_conversation(as_user(boss), "group", participants=["aki"], title="Plans")
    response = as_user(boss).post(
        f"/api/v1/conversations/{group['id']}/participants", {"user_id": "gus"}, format="json"
    )
    refused(response, "direct_scope=tree")
    assert not Participant.objects.filter(conversation_id=group["id"], user__username="gus")
    response = as_user(boss).post(
        f"/api/v1/conversations/{group['id']}/participants", {"user_id": "emma"}, format="json"
    )
    assert response.status_code == 201, response.content


@pytest.mark.django_db
def test_without_organizations_nothing_is_decided(as_user):
    # Users naming organizations the service does not know, with no tree at all: as before.
    emma = make_user("emma", organization="emea", roles=[])
    make_user("gus", organization="globex")
    create_conversation(as_user(emma), participants=["gus"])
    create_conversation(as_user(emma), "group", participants=["gus"])


@pytest.mark.django_db
def test_support_routes_to_the_nearest_organization_with_agents(
    as_user, django_assert_max_num_queries
):
    ids = tree()
    requester = make_user("pierre", organization=ids["paris"])
    emea_agents = {
        make_user(f"emea-agent-{i}", organization=ids["emea"], roles=["support_agent"])
        for i in range(3)
    }
    acme_agent = make_user("acme-agent", organization=ids["acme"], roles=["support_agent"])
    apac_agent = make_user("apac-agent", organization=ids["apac"], roles=["support_agent"])
    make_user("globex-agent", organization=ids["globex"], roles=["support_agent"])

    support = create_conversation(as_user(requester), "support", participants=[])
    conversation = Conversation.objects.get(id=support["id"])

    # Paris has no agent: the nearest organization up the tree with any is emea (not acme).
    with django_assert_max_num_queries(2):
        routed = set(selectors.support_agents_for(requester))
    assert routed == emea_agents

    # It reaches them (a persisted event: a socket gets it live, a reconnecting one replays it),
    # and no other agent.
    waiting = RealtimeEvent.objects.filter(type="support.waiting")
    assert {e.user_id for e in waiting} == {a.pk for a in emea_agents}
    assert {e.payload["conversation_id"] for e in waiting} == {support["id"]}

    # An agent of apac sees nothing of it and cannot be given it.
    with pytest.raises(CommunicationNotAllowedError) as refusal:
        services.support_assign(conversation=conversation, agent=apac_agent)
    assert refusal.value.code == "communication_not_allowed"
    assert str(refusal.value.detail).startswith("support_routing")
    assert as_user(apac_agent).get(f"/api/v1/conversations/{support['id']}").status_code == 404
    conversation.refresh_from_db()
    assert conversation.assigned_agent_id is None

    # An agent of emea is assigned and sees it; acme's agent covers everything under acme.
    emea_agent = sorted(emea_agents, key=lambda u: u.username)[0]
    services.support_assign(conversation=conversation, agent=emea_agent)
    assert as_user(emea_agent).get(f"/api/v1/conversations/{support['id']}").status_code == 200
    services.support_assign(conversation=conversation, agent=acme_agent)
    conversation.refresh_from_db()
    assert conversation.assigned_agent_id == acme_agent.pk

    # Adding apac's agent as an agent by hand is refused the same way.
    response = as_user(acme_agent).post(
        f"/api/v1/conversations/{support['id']}/participants",
        {"user_id": apac_agent.external_id, "role": "agent"},
        format="json",
    )
    refused(response, "support_routing")

    # Once Paris has an agent, its own agents are the ones (the query count does not grow).
    paris_agent = make_user("paris-agent", organization=ids["paris"], roles=["support_agent"])
    with django_assert_max_num_queries(2):
        assert list(selectors.support_agents_for(requester)) == [paris_agent]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_group_creation_is_refused_over_the_websocket(live_asgi):
    tag = uuid.uuid4().hex[:6]
    ids = tree(tag)
    set_policy(ids["acme"], group_create_roles=["manager"])
    emma = make_user(f"emma-{tag}", organization=ids["emea"])
    boss = make_user(f"boss-{tag}", organization=ids["emea"], roles=["manager"])
    aki = make_user(f"aki-{tag}", organization=ids["apac"])
    gus = make_user(f"gus-{tag}", organization=ids["globex"])

    with sockets(live_asgi, [emma, boss]) as (emma_ws, boss_ws):
        emma_ws.send(
            json.dumps(
                {
                    "type": "conversation.create",
                    "conversation_type": "group",
                    "participants": [aki.external_id],
                    "client_id": "g1",
                }
            )
        )
        error = recv_until(emma_ws, of_type("error"))
        assert error["code"] == "communication_not_allowed", error
        assert error["detail"].startswith("group_create_roles")
        assert error["client_id"] == "g1"

        boss_ws.send(
            json.dumps(
                {
                    "type": "conversation.create",
                    "conversation_type": "direct",
                    "participants": [gus.external_id],
                    "client_id": "d1",
                }
            )
        )
        error = recv_until(boss_ws, of_type("error"))
        assert error["code"] == "communication_not_allowed", error
        assert error["detail"].startswith("direct_scope=tree")
        assert not Conversation.objects.filter(created_by__in=[emma, boss]).exists()

        # Within the rules the socket creates it, as the API does.
        boss_ws.send(
            json.dumps(
                {
                    "type": "conversation.create",
                    "conversation_type": "group",
                    "participants": [aki.external_id],
                    "title": "Plans",
                    "client_id": "g2",
                }
            )
        )
        created = recv_until(boss_ws, of_type("conversation.created"))
        assert created["client_id"] == "g2" and created["created"] is True
        assert {p["user_id"] for p in created["conversation"]["participants"]} == {
            boss.external_id,
            aki.external_id,
        }
        assert Conversation.objects.filter(id=created["conversation"]["id"]).exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_support_conversation_reaches_the_routed_agents_live(live_asgi, as_user):
    tag = uuid.uuid4().hex[:6]
    ids = tree(tag)
    pierre = make_user(f"pierre-{tag}", organization=ids["paris"])
    emea_agent = make_user(f"emea-{tag}", organization=ids["emea"], roles=["support_agent"])
    with sockets(live_asgi, [emea_agent]) as (ws,):
        support = create_conversation(as_user(pierre), "support", participants=[])
        event = recv_until(ws, of_type("support.waiting"))
        assert event["data"]["conversation_id"] == support["id"]
        assert event["data"]["requester"] == pierre.external_id
