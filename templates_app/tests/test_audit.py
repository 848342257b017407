"""The audit trail of templates: create, update, draft, submit, approve, reject and rollback each
leave one entry naming the service that acted, with field names but never the sources; a change
that rolls back leaves none."""

from __future__ import annotations

import json

import pytest
from django.db import transaction

from communication.models import AuditEntry
from templates_app import services

pytestmark = pytest.mark.django_db

BASE = "/api/v1/templates"
SECRET_TEXT = "Your parcel for Ada Lovelace"


def entries(**filters):
    return list(AuditEntry.objects.filter(**filters).order_by("id"))


def ok(response, status=200):
    assert response.status_code == status, response.content
    return response.json()


def test_the_review_cycle_through_the_api_is_recorded(editor, reviewer, templates, committing):
    ok(
        editor.post(
            BASE,
            {"key": "parcel", "name": "Parcel", "category": "transactional", "channel": "sms"},
            format="json",
        ),
        201,
    )
    ok(editor.patch(f"{BASE}/parcel", {"description": "Parcel news"}, format="json"))
    draft = ok(
        editor.post(
            f"{BASE}/parcel/versions", {"language": "en", "text": SECRET_TEXT}, format="json"
        ),
        201,
    )
    vid = draft["id"]
    ok(editor.post(f"{BASE}/versions/{vid}/submit", {}, format="json"))
    ok(reviewer.post(f"{BASE}/versions/{vid}/reject", {"note": "typo"}, format="json"))
    ok(editor.post(f"{BASE}/versions/{vid}/submit", {}, format="json"))
    with committing():
        ok(reviewer.post(f"{BASE}/versions/{vid}/approve", {}, format="json"))

    (create,) = entries(action="template.create")
    assert (create.actor, create.object_type) == ("service:cms", "templates_app.template")
    assert create.changes == {"key": "parcel", "channel": "sms", "category": "transactional"}
    (update,) = entries(action="template.update")
    assert update.changes == {"description": ["", "Parcel news"]}
    assert update.request_id  # the request's id, from the middleware
    version_entries = entries(object_type="templates_app.templateversion", object_id=vid)
    assert [(e.action, e.actor) for e in version_entries] == [
        ("template_version.create", "service:cms"),
        ("template.submit", "service:cms"),
        ("template.reject", "service:cms-review"),
        ("template.submit", "service:cms"),
        ("template.approve", "service:cms-review"),
    ]
    assert version_entries[-1].changes["status"] == ["pending_approval", "approved"]
    assert version_entries[0].changes["fields"] == ["text"]
    everything = json.dumps([e.changes for e in AuditEntry.objects.all()])
    assert SECRET_TEXT not in everything and "Ada" not in everything


def test_a_rollback_is_recorded_with_the_version_it_replaces(editor, templates, committing):
    template = templates.create(key="shipped", channel="sms")
    first = templates.live(template, text="one")
    templates.live(template, text="two")
    with committing():
        ok(
            editor.post(
                f"{BASE}/shipped/rollback",
                {"version": str(first.pk), "language": "en"},
                format="json",
            )
        )
    (entry,) = entries(action="template.rollback")
    assert (entry.actor, entry.object_id) == ("service:cms", str(first.pk))
    assert entry.changes["replaces"] == 2 and entry.changes["number"] == 1


def test_a_change_that_rolls_back_leaves_no_entry(templates):
    template = templates.create(key="rolled", channel="sms")
    before = AuditEntry.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.template_update(template=template, actor="service:cms", description="gone")
        raise RuntimeError
    assert AuditEntry.objects.count() == before
