"""``/api/v1/campaigns``: the body of a campaign (steps, runs, progress with every delivery
status), its life cycle through the API (schedule, approval by someone else, pause, resume,
cancel, and the 409s of a wrong move), what a draft and a scheduled campaign may change, how bad
input is answered (400 naming the field, never a 500), test sends, the recipients ledger, and who
may call it."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.models import Campaign, CampaignRecipient, CampaignRun, Segment
from communication.auth import tokens
from communication.models import User
from notifications.models import Delivery, Notification, NotificationRequest
from templates_app import services as template_services

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


@pytest.fixture
def reviewer(make_service_token):
    return _client(make_service_token("crm-review", ["campaigns:manage"]))


@pytest.fixture
def newsletter(db, django_capture_on_commit_callbacks):
    """A live email template family ``newsletter``."""
    template = template_services.template_create(
        actor="service:cms",
        key="newsletter",
        name="Newsletter",
        category="marketing",
        channel="email",
    )
    version = template_services.version_create(
        template=template,
        actor="service:cms",
        language="en",
        subject="News for {{ name|default('you') }}",
        html="<p>News</p>",
        text="News",
    )
    template_services.version_submit(version=version, actor="service:cms")
    with django_capture_on_commit_callbacks(execute=True):
        template_services.version_approve(version=version, actor="service:cms-review")
    return template


@pytest.fixture
def segment(db):
    User.objects.bulk_create(
        User(username=f"fr-{i}", external_id=f"fr-{i}", locale="fr", email=f"fr-{i}@example.com")
        for i in range(3)
    )
    return Segment.objects.create(name="French", rules=FRENCH, created_by="service:crm")


def _body(segment, **extra):
    return {
        "name": "Spring news",
        "category": "marketing",
        "channels": ["email"],
        "segment": str(segment.id),
        "data": {"season": "spring"},
        "steps": [
            {"template": "newsletter"},
            {"template": "newsletter", "delay": 86400, "condition": {"previous": "not_opened"}},
        ],
        **extra,
    }


def _create(client, segment, **extra):
    response = client.post("/api/v1/campaigns", _body(segment, **extra), format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _post(client, campaign_id, verb, body=None):
    return client.post(f"/api/v1/campaigns/{campaign_id}/{verb}", body or {}, format="json")


def _deliveries(campaign_id, statuses):
    """Deliveries of a campaign's request, one per status given (rows as the writer leaves
    them)."""
    request = NotificationRequest.objects.create(
        caller=f"campaign:{campaign_id}", category_id="marketing", campaign_id=campaign_id
    )
    for i, status in enumerate(statuses):
        notification = Notification.objects.create(
            request=request, recipient={"email": f"x{i}@example.com"}, category_id="marketing"
        )
        Delivery.objects.create(notification=notification, channel="email", status=status)


def test_create_and_read_the_whole_body(manager, newsletter, segment):
    created = _create(manager, segment)
    assert created["status"] == "draft" and created["created_by"] == "service:crm"
    campaign_id = created["id"]
    _deliveries(campaign_id, ["delivered", "delivered", "queued", "suppressed", "cancelled"])

    body = manager.get(f"/api/v1/campaigns/{campaign_id}").json()
    assert {"id", "name", "status", "steps", "runs", "progress"} <= set(body)
    assert {
        "category",
        "channels",
        "segment",
        "static_list",
        "send_at",
        "local_time",
        "cron",
        "timezone",
        "created_by",
        "approved_by",
        "pause_reason",
        "audience_count",
    } <= set(body)
    assert body["category"] == "marketing" and body["channels"] == ["email"]
    assert body["segment"] == str(segment.id) and body["static_list"] is None
    assert [(s["position"], s["template"], s["delay"], s["condition"]) for s in body["steps"]] == [
        (1, "newsletter", None, {}),
        (2, "newsletter", 86400, {"previous": "not_opened"}),
    ]
    assert body["runs"] == []
    progress = body["progress"]
    assert set(progress) >= {"total", "by_status", "percent", "per_second", "eta_seconds"}
    assert set(progress["by_status"]) == set(Delivery.Status.values)
    assert {"suppressed", "cancelled"} <= set(progress["by_status"])
    assert progress["total"] == 5
    assert progress["by_status"]["delivered"] == 2 and progress["by_status"]["queued"] == 1
    assert progress["by_status"]["failed"] == 0

    _create(manager, segment, name="Second")
    listed = manager.get("/api/v1/campaigns?limit=1").json()
    assert listed["count"] == 2 and [c["name"] for c in listed["results"]] == ["Second"]
    assert manager.get("/api/v1/campaigns/not-a-uuid").status_code == 404
    missing = manager.get("/api/v1/campaigns/0190a000-0000-7000-8000-000000000000")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_life_cycle_and_wrong_moves(manager, newsletter, segment):
    campaign_id = _create(manager, segment)["id"]
    for verb in ("pause", "resume", "approve"):
        refused = _post(manager, campaign_id, verb)
        assert refused.status_code == 409 and refused.json()["code"] == "invalid_transition"

    scheduled = _post(manager, campaign_id, "schedule", {"at": None})
    assert scheduled.status_code == 200, scheduled.content
    assert scheduled.json()["status"] == "scheduled" and scheduled.json()["audience_count"] == 3
    again = _post(manager, campaign_id, "schedule")
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"

    paused = _post(manager, campaign_id, "pause").json()
    assert paused["status"] == "paused" and paused["pause_reason"] == "paused by service:crm"
    # No run in progress: back to waiting for its time.
    assert _post(manager, campaign_id, "resume").json()["status"] == "scheduled"

    # With a run in progress it resumes running.
    campaign = Campaign.objects.get(id=campaign_id)
    CampaignRun.objects.create(campaign=campaign, slot=timezone.now())
    Campaign.objects.filter(id=campaign_id).update(status="running")
    assert _post(manager, campaign_id, "pause").json()["status"] == "paused"
    resumed = _post(manager, campaign_id, "resume").json()
    assert resumed["status"] == "running" and resumed["pause_reason"] == ""
    assert len(resumed["runs"]) == 1 and resumed["runs"][0]["status"] == "running"

    cancelled = _post(manager, campaign_id, "cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"]
    assert cancelled["runs"][0]["status"] == "cancelled"
    for verb in ("cancel", "pause", "resume", "schedule"):
        refused = _post(manager, campaign_id, verb)
        assert refused.status_code == 409, (verb, refused.content)


def test_approval_above_the_threshold_by_someone_else(
    manager, reviewer, newsletter, segment, settings
):
    settings.CAMPAIGN_APPROVAL_THRESHOLD = 2
    campaign_id = _create(manager, segment)["id"]
    pending = _post(manager, campaign_id, "schedule").json()
    assert pending["status"] == "pending_approval" and pending["audience_count"] == 3

    refused = _post(manager, campaign_id, "approve")
    assert refused.status_code == 403 and refused.json()["code"] == "approver_is_author"
    assert Campaign.objects.get(id=campaign_id).status == "pending_approval"

    approved = _post(reviewer, campaign_id, "approve")
    assert approved.status_code == 200, approved.content
    assert approved.json()["status"] == "scheduled"
    assert approved.json()["approved_by"] == "service:crm-review"
    assert _post(reviewer, campaign_id, "approve").status_code == 409

    settings.CAMPAIGN_APPROVAL_THRESHOLD = 3  # at the threshold: no approval needed
    other = _create(manager, segment)["id"]
    assert _post(manager, other, "schedule").json()["status"] == "scheduled"


def test_a_draft_changes_anything_a_scheduled_campaign_its_name_only(manager, newsletter, segment):
    campaign_id = _create(manager, segment)["id"]
    url = f"/api/v1/campaigns/{campaign_id}"
    changed = manager.patch(
        url,
        {"steps": [{"template": "newsletter"}], "cron": "0 9 * * 1", "timezone": "Europe/Paris"},
        format="json",
    )
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert len(body["steps"]) == 1 and body["cron"] == "0 9 * * 1"
    assert body["timezone"] == "Europe/Paris"

    assert _post(manager, campaign_id, "schedule").json()["status"] == "scheduled"
    renamed = manager.patch(url, {"name": "Weekly news"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "Weekly news"
    for change in ({"steps": []}, {"name": "x", "data": {}}, {"cron": ""}):
        refused = manager.patch(url, change, format="json")
        assert refused.status_code == 409, refused.content
        assert refused.json()["code"] == "campaign_not_draft"
    assert len(Campaign.objects.get(id=campaign_id).steps.all()) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"category": "nope"}, "category"),
        ({"channels": ["fax"]}, "channels"),
        ({"segment": "0190a000-0000-7000-8000-000000000000"}, "segment"),
        ({"steps": [{"template": "no-such-family"}]}, "steps[0].template"),
        ({"channels": ["email", "sms"]}, "steps[0].template"),
        ({"steps": [{"template": "newsletter", "content": {"body": "x"}}]}, "steps[0].template"),
        ({"steps": [{"template": "newsletter", "delay": -1}]}, "steps[0].delay"),
        (
            {"steps": [{"template": "newsletter", "condition": {"previous": "opened"}}]},
            "steps[0].condition.previous",
        ),
        (
            {
                "steps": [
                    {"template": "newsletter"},
                    {"template": "newsletter", "condition": {"previous": "read"}},
                ]
            },
            "steps[1].condition.previous",
        ),
        (
            {
                "steps": [
                    {"template": "newsletter"},
                    {
                        "template": "newsletter",
                        "condition": {"field": "locale", "op": "like", "value": "fr"},
                    },
                ]
            },
            "steps[1].condition.op",
        ),
        ({"steps": [{"template": "newsletter", "position": 2}]}, "steps"),
        ({"steps": [{"template": "newsletter"}] * 1000}, "steps"),
        ({"name": "x" * 10_000}, "name"),
        ({"name": ""}, "name"),
        ({"cron": "*/5 * * * *"}, "cron"),
        ({"cron": "0 9 * * 1 2024"}, "cron"),
        ({"cron": "61 9 * * *"}, "cron"),
        ({"cron": "0 9 * * 1", "send_at": "2099-01-01T09:00:00Z"}, "cron"),
        ({"cron": "0 9 * * 1", "local_time": "09:00"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"local_time": "9h"}, "local_time"),
        ({"window_start": "08:00"}, "window_end"),
        ({"data": ["not", "an", "object"]}, "data"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(manager, newsletter, segment, change, field):
    response = manager.post("/api/v1/campaigns", {**_body(segment), **change}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "validation_error"
    assert field in body["fields"], body
    assert not Campaign.objects.exists()


def test_schedule_refuses_an_incomplete_campaign_or_a_bad_schedule(manager, newsletter, segment):
    no_audience = manager.post(
        "/api/v1/campaigns", {**_body(segment), "segment": None}, format="json"
    ).json()["id"]
    refused = _post(manager, no_audience, "schedule")
    assert refused.status_code == 400 and "segment" in refused.json()["fields"]
    no_steps = manager.post(
        "/api/v1/campaigns", {**_body(segment), "steps": []}, format="json"
    ).json()["id"]
    refused = _post(manager, no_steps, "schedule")
    assert refused.status_code == 400 and "steps" in refused.json()["fields"]

    campaign_id = _create(manager, segment)["id"]
    past = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    for body, field in (
        ({"at": past}, "at"),
        ({"at": "tomorrow"}, "at"),
        ({"cron": "* * * * *"}, "cron"),
        ({"cron": "0 9 * * *", "at": "2099-01-01T00:00:00Z"}, "cron"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
    ):
        refused = _post(manager, campaign_id, "schedule", body)
        assert refused.status_code == 400, (body, refused.content)
        assert field in refused.json()["fields"], (body, refused.json())
    assert Campaign.objects.get(id=campaign_id).status == "draft"

    later = timezone.now() + dt.timedelta(days=1)
    scheduled = _post(
        manager,
        campaign_id,
        "schedule",
        {"at": later.isoformat(), "local_time": "09:00", "timezone": "America/New_York"},
    ).json()
    assert scheduled["status"] == "scheduled" and scheduled["local_time"] == "09:00"
    assert scheduled["timezone"] == "America/New_York"
    assert dt.datetime.fromisoformat(scheduled["send_at"]) == later.replace(
        microsecond=later.microsecond
    )


def test_test_send_goes_through_the_send_path(manager, newsletter, segment):
    campaign_id = _create(manager, segment)["id"]
    sent = _post(manager, campaign_id, "test-send", {"to": {"email": "me@example.com"}})
    assert sent.status_code == 202, sent.content
    request = NotificationRequest.objects.get(id=sent.json()["request_id"])
    assert request.template_key == "newsletter" and request.data == {"season": "spring"}
    assert request.campaign_id is None  # a test is not part of the campaign's figures
    assert request.caller == "service:crm"
    notification = request.notifications.get()
    assert notification.email == "me@example.com"
    assert [d.channel for d in Delivery.objects.filter(notification=notification)] == ["email"]

    for to, field in (
        ({"email": "me@example.com", "phone": "+33612345678"}, "to"),
        ({"email": "not an address"}, "to.email"),
        ({"phone": "+33612345678"}, "to.phone"),  # the campaign sends email only
        ({}, "to"),
    ):
        refused = _post(manager, campaign_id, "test-send", {"to": to})
        assert refused.status_code == 400, (to, refused.content)
        assert field in refused.json()["fields"], (to, refused.json())


def test_recipients_are_paginated_and_filtered_by_state(manager, newsletter, segment):
    campaign_id = _create(manager, segment)["id"]
    campaign = Campaign.objects.get(id=campaign_id)
    step = campaign.steps.get(position=1)
    run = CampaignRun.objects.create(campaign=campaign, slot=timezone.now())
    users = list(User.objects.filter(locale="fr").order_by("external_id"))
    CampaignRecipient.objects.bulk_create(
        CampaignRecipient(run=run, step=step, key=u.external_id, user=u, state=state)
        for u, state in zip(users, ["queued", "pending", "queued"], strict=True)
    )
    url = f"/api/v1/campaigns/{campaign_id}/recipients"
    page = manager.get(url + "?limit=2").json()
    assert page["count"] == 3 and len(page["results"]) == 2
    first = page["results"][0]
    assert first["user_id"] == "fr-0" and first["step_position"] == 1
    assert first["run"] == str(run.id) and first["state"] == "queued"
    queued = manager.get(url + "?state=queued").json()
    assert [r["key"] for r in queued["results"]] == ["fr-0", "fr-2"]
    refused = manager.get(url + "?state=sent")
    assert refused.status_code == 400 and "state" in refused.json()["fields"]


def test_who_may_call(make_service_token, make_user_token, newsletter, segment):
    assert _client().get("/api/v1/campaigns").status_code == 401
    sender = _client(make_service_token("billing", ["notifications:send"]))
    refused = sender.get("/api/v1/campaigns")
    assert refused.status_code == 403 and refused.json()["code"] == "scope_missing"
    alice = _client(make_user_token("alice"))
    assert alice.post("/api/v1/campaigns", _body(segment), format="json").status_code == 403
    staff = User.objects.create(username="ops", external_id="ops", is_staff=True)
    created = _client(tokens.issue_user_token(staff)).post(
        "/api/v1/campaigns", _body(segment), format="json"
    )
    assert created.status_code == 201, created.content
    assert created.json()["created_by"] == "user:ops"


def test_the_list_costs_the_same_queries_whatever_its_length(manager, newsletter, segment):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert manager.get("/api/v1/campaigns?limit=50").status_code == 200
        return len(queries)

    _create(manager, segment)
    one = count()
    for i in range(4):
        campaign_id = _create(manager, segment, name=f"More {i}")["id"]
        CampaignRun.objects.create(campaign_id=campaign_id, slot=timezone.now())
    assert count() == one


def test_a_campaign_reads_in_five_queries(manager, newsletter, segment):
    campaign_id = _create(manager, segment)["id"]
    with CaptureQueriesContext(connection) as queries:
        assert manager.get(f"/api/v1/campaigns/{campaign_id}").status_code == 200
    # The campaign, its steps, its latest runs, its progress (deliveries by status, the
    # recipients ledger by state).
    assert len(queries) == 5, "\n".join(q["sql"] for q in queries)
