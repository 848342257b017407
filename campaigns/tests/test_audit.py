"""The audit trail of campaigns: segments and campaigns written through the API, and every status
change of the life cycle, each one entry naming the service that acted; rules and data by name
only; a change that rolls back leaves none."""

from __future__ import annotations

import json

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from campaigns import services
from campaigns.models import Campaign, Segment
from communication.models import AuditEntry, User
from templates_app import services as template_services

pytestmark = pytest.mark.django_db

CANARY = "canary-spring@example.com"


@pytest.fixture
def manager(make_service_token):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_service_token('crm', ['campaigns:manage'])}"
    )
    return client


@pytest.fixture
def newsletter(db, django_capture_on_commit_callbacks):
    template = template_services.template_create(
        actor="service:cms",
        key="newsletter",
        name="Newsletter",
        category="marketing",
        channel="email",
    )
    version = template_services.version_create(
        template=template, actor="service:cms", language="en", subject="News", html="<p>News</p>"
    )
    template_services.version_submit(version=version, actor="service:cms")
    with django_capture_on_commit_callbacks(execute=True):
        template_services.version_approve(version=version, actor="service:cms-review")
    return template


def actions(object_id) -> list[tuple[str, str]]:
    return [
        (e.action, e.actor)
        for e in AuditEntry.objects.filter(object_id=str(object_id)).order_by("id")
    ]


def test_segments_and_the_life_cycle_through_the_api_are_recorded(manager, newsletter):
    User.objects.create(username="fr-1", external_id="fr-1", locale="fr", email="fr-1@example.com")
    rules = {"field": "organization", "op": "eq", "value": CANARY}
    segment = manager.post("/api/v1/segments", {"name": "French", "rules": rules}, format="json")
    assert segment.status_code == 201, segment.content
    segment_id = segment.json()["id"]
    french = {"field": "locale", "op": "eq", "value": "fr"}
    assert (
        manager.patch(
            f"/api/v1/segments/{segment_id}", {"rules": french}, format="json"
        ).status_code
        == 200
    )
    body = {
        "name": "Spring news",
        "category": "marketing",
        "channels": ["email"],
        "segment": segment_id,
        "data": {"note": CANARY},
        "steps": [{"template": "newsletter"}],
    }
    created = manager.post("/api/v1/campaigns", body, format="json")
    assert created.status_code == 201, created.content
    campaign_id = created.json()["id"]
    assert (
        manager.patch(
            f"/api/v1/campaigns/{campaign_id}", {"name": "Spring", "data": {}}, format="json"
        ).status_code
        == 200
    )
    for verb, body in (("schedule", {"at": None}), ("pause", {}), ("resume", {}), ("cancel", {})):
        response = manager.post(f"/api/v1/campaigns/{campaign_id}/{verb}", body, format="json")
        assert response.status_code == 200, (verb, response.content)

    assert actions(segment_id) == [
        ("segment.create", "service:crm"),
        ("segment.update", "service:crm"),
    ]
    assert AuditEntry.objects.get(action="segment.update").changes == {"rules": "changed"}
    assert actions(campaign_id) == [
        ("campaign.create", "service:crm"),
        ("campaign.update", "service:crm"),
        ("campaign.schedule", "service:crm"),
        ("campaign.pause", "service:crm"),
        ("campaign.resume", "service:crm"),
        ("campaign.cancel", "service:crm"),
    ]
    entries = {e.action: e for e in AuditEntry.objects.filter(object_type="campaigns.campaign")}
    assert entries["campaign.update"].changes == {
        "name": ["Spring news", "Spring"],
        "data": "changed",
    }
    assert entries["campaign.schedule"].changes["status"] == ["draft", "scheduled"]
    assert entries["campaign.schedule"].changes["audience_count"] == [None, 1]
    assert entries["campaign.pause"].changes["status"] == ["scheduled", "paused"]
    assert entries["campaign.cancel"].changes["status"] == ["scheduled", "cancelled"]
    everything = json.dumps(list(AuditEntry.objects.values_list("changes", flat=True)))
    assert CANARY not in everything and "fr-1@example.com" not in everything

    spare = manager.post("/api/v1/segments", {"name": "Spare", "rules": french}, format="json")
    assert manager.delete(f"/api/v1/segments/{spare.json()['id']}").status_code == 204
    assert actions(spare.json()["id"])[-1] == ("segment.delete", "service:crm")


def test_the_engine_records_its_transitions_as_the_system(newsletter):
    segment = Segment.objects.create(
        name="All", rules={"field": "locale", "op": "eq", "value": "fr"}
    )
    campaign = services.campaign_create(
        actor="service:crm",
        name="Auto",
        category="marketing",
        channels=["email"],
        segment=str(segment.id),
        steps=[{"template_key": "newsletter"}],
    )
    from campaigns.services.status import campaign_transition  # noqa: PLC0415

    campaign_transition(campaign, Campaign.Status.SCHEDULED)
    campaign_transition(campaign, Campaign.Status.RUNNING)
    campaign_transition(campaign, Campaign.Status.COMPLETED)
    entries = AuditEntry.objects.filter(object_id=str(campaign.pk)).order_by("id")
    assert [(e.action, e.actor) for e in entries][1:] == [
        ("campaign.schedule", "system"),
        ("campaign.start", "system"),
        ("campaign.complete", "system"),
    ]


def test_a_transition_that_rolls_back_leaves_no_entry(newsletter):
    segment = Segment.objects.create(
        name="All", rules={"field": "locale", "op": "eq", "value": "fr"}
    )
    campaign = services.campaign_create(
        actor="service:crm",
        name="Rolled",
        category="marketing",
        channels=["email"],
        segment=str(segment.id),
        steps=[{"template_key": "newsletter"}],
    )
    with pytest.raises(RuntimeError), transaction.atomic():
        services.campaign_cancel(campaign=campaign, actor="service:crm")
        raise RuntimeError
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert not AuditEntry.objects.filter(action="campaign.cancel").exists()
