"""GET /api/v1/compliance/report: retention per kind, erasures and exports done, the audit chain."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from communication import audit
from communication.compliance import retention
from communication.models import ErasureRequest, User
from notifications.models import OutboxMessage

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(make_service_token):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_service_token('dpo', scopes=['compliance:read'])}"
    )
    return client


def _report(client) -> dict:
    response = client.get("/api/v1/compliance/report")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_report_shows_what_is_past_due_and_what_the_last_run_removed(reader, settings):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "outbox": 30, "messages": 0}
    old = OutboxMessage.objects.create(channel="email", to="a@example.com")
    OutboxMessage.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - dt.timedelta(days=40)
    )
    OutboxMessage.objects.create(channel="email", to="b@example.com")

    before = _report(reader)
    assert set(before["retention"]) == set(settings.RETENTION_DAYS)
    outbox = before["retention"]["outbox"]
    assert (outbox["days"], outbox["past_due"], outbox["past_due_capped"]) == (30, 1, False)
    assert 39.9 < outbox["oldest_age_days"] < 40.1
    assert (outbox["last_run_at"], outbox["last_removed"]) == (None, None)
    # Kept forever: no cutoff, nothing ever past due.
    assert before["retention"]["messages"]["cutoff"] is None
    assert before["retention"]["messages"]["past_due"] == 0

    retention.retention_run()

    outbox = _report(reader)["retention"]["outbox"]
    assert (outbox["past_due"], outbox["last_removed"]) == (0, 1)
    assert outbox["last_run_at"] is not None
    assert outbox["oldest_age_days"] < 1


def test_the_report_counts_erasures_and_exports(reader):
    empty = _report(reader)
    assert empty["erasures"] == {"count": 0, "last_at": None}
    assert empty["exports"] == {"count": 0, "last_at": None}

    finished = timezone.now()
    ErasureRequest.objects.create(
        subject_kind="email",
        subject_hash="0" * 64,
        status=ErasureRequest.Status.DONE,
        requested_by="service:dpo",
        finished_at=finished,
    )
    ErasureRequest.objects.create(
        subject_kind="email", subject_hash="1" * 64, requested_by="service:dpo"
    )
    User.objects.create(username="dana", external_id="dana")
    export = reader.get("/api/v1/compliance/export/dana")
    assert export.status_code == 200

    report = _report(reader)
    assert report["erasures"]["count"] == 1
    assert dt.datetime.fromisoformat(report["erasures"]["last_at"]) == finished
    assert report["exports"]["count"] == 1


def test_the_report_shows_the_audit_chains_watermark(reader):
    audit.audit_record("thing.happen", "x")
    last = audit.audit_record("thing.happen", "x")
    assert _report(reader)["audit"]["unsealed"] == 2
    audit.audit_chain()
    chain = _report(reader)["audit"]
    assert (chain["watermark_entry_id"], chain["unsealed"]) == (last.id, 0)
    assert chain["last_chained_at"] is not None


def test_the_scope_is_required(make_service_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('shop')}")
    response = client.get("/api/v1/compliance/report")
    assert response.status_code == 403
    assert response.json()["code"] == "scope_missing"
