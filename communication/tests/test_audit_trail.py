"""The audit trail's tamper evidence: the chain, ``verify_audit``, the append-only tables, writers
that never wait on one another, retention through an anchor, and the API."""

from __future__ import annotations

import datetime as dt
import threading
from contextlib import contextmanager
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from communication import audit
from communication.models import AuditAnchor, AuditEntry, AuditSeal

TRIGGERS = {
    "communication_auditentry": "pgtrigger_audit_append_only_05c43",
    "communication_auditseal": "pgtrigger_audit_seal_append_only_d5b06",
    "communication_auditanchor": "pgtrigger_audit_anchor_append_only_ada42",
}


def record(n: int, action: str = "template.approve") -> list[AuditEntry]:
    return [
        audit.audit_record(action, "templates_app.template", f"t{i}", changes={"state": ["a", i]})
        for i in range(n)
    ]


def verify_command() -> tuple[int, str]:
    """``manage.py verify_audit``: its exit status and what it printed."""
    out = StringIO()
    try:
        call_command("verify_audit", stdout=out)
    except CommandError as exc:
        return exc.returncode, str(exc)
    return 0, out.getvalue()


@contextmanager
def behind_the_triggers():
    """What someone with database access could do: the append-only triggers switched off."""
    with connection.cursor() as cursor:
        for table, trigger in TRIGGERS.items():
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
        yield
        for table, trigger in TRIGGERS.items():
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")


def edit_behind_the_triggers(sql: str, params=()) -> None:
    with behind_the_triggers(), connection.cursor() as cursor:
        cursor.execute(sql, params)


# ---------------------------------------------------------------------------------- the chain


@pytest.mark.django_db
def test_the_chain_verifies_after_many_entries():
    entries = record(250)
    assert audit.audit_status().unsealed == 250

    assert audit.audit_chain() == 250
    assert audit.audit_chain() == 0  # a second run finds nothing new

    status, output = verify_command()
    assert status == 0, output
    assert "250 entries checked" in output
    result = audit.audit_verify(batch=40)  # pages of links, not one read
    assert result.ok and result.checked == 250
    assert result.watermark_entry_id == entries[-1].id
    state = audit.audit_status()
    assert (state.watermark_seq, state.unsealed) == (250, 0)
    assert state.last_verification is not None and state.last_verification.ok
    links = list(AuditSeal.objects.order_by("seq").values_list("entry_id", flat=True))
    assert links == [e.id for e in entries]


@pytest.mark.django_db
def test_an_entry_edited_behind_the_trigger_is_reported_at_its_id():
    entries = record(30)
    audit.audit_chain()
    victim = entries[17]
    edit_behind_the_triggers(
        "UPDATE communication_auditentry SET actor = 'staff:someone-else' WHERE id = %s",
        [victim.id],
    )
    status, output = verify_command()
    assert status == 1
    assert f"entry {victim.id}" in output
    assert audit.audit_verify().first_broken_id == victim.id


@pytest.mark.django_db
def test_a_changed_value_in_changes_is_reported():
    entries = record(5)
    audit.audit_chain()
    with behind_the_triggers():
        AuditEntry.objects.filter(id=entries[2].id).update(changes={"state": ["a", 99]})
    result = audit.audit_verify()
    assert not result.ok and result.first_broken_id == entries[2].id
    assert result.checked == 2


@pytest.mark.django_db
def test_a_value_cleared_to_null_is_reported():
    with audit.audit_actor("staff:ann", ip="10.0.0.9"):
        entries = record(3)
    audit.audit_chain()
    edit_behind_the_triggers(
        "UPDATE communication_auditentry SET ip = NULL WHERE id = %s", [entries[1].id]
    )
    assert audit.audit_verify().first_broken_id == entries[1].id


@pytest.mark.django_db
def test_a_deleted_entry_is_reported_at_its_id():
    entries = record(10)
    audit.audit_chain()
    edit_behind_the_triggers("DELETE FROM communication_auditentry WHERE id = %s", [entries[6].id])
    status, output = verify_command()
    assert status == 1 and f"entry {entries[6].id}" in output and "missing" in output


@pytest.mark.django_db
def test_an_edited_or_removed_link_is_reported():
    entries = record(10)
    audit.audit_chain()
    with behind_the_triggers():
        AuditSeal.objects.filter(entry_id=entries[4].id).update(hash="f" * 64)
    assert audit.audit_verify().first_broken_id == entries[4].id

    with behind_the_triggers():
        AuditSeal.objects.filter(entry_id=entries[4].id).delete()
    result = audit.audit_verify()
    # The entry after the gap: its link no longer follows the one before it.
    assert not result.ok and result.first_broken_id == entries[5].id


@pytest.mark.django_db
def test_the_database_refuses_update_and_delete():
    entry = record(1)[0]
    audit.audit_chain()
    statements = [
        "UPDATE communication_auditentry SET action = 'x'",
        "DELETE FROM communication_auditentry",
        "UPDATE communication_auditseal SET hash = 'x'",
        "DELETE FROM communication_auditseal",
    ]
    for sql in statements:
        with pytest.raises(DatabaseError, match="Cannot update or delete"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql)
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEntry.objects.filter(id=entry.id).update(actor="someone")
    with pytest.raises(DatabaseError), transaction.atomic():
        entry.delete()
    assert audit.audit_verify().ok


# ------------------------------------------------------------------------ concurrent writers


def _in_thread(target):
    """Runs ``target`` on its own database connection, keeping what it raised."""
    errors: list[BaseException] = []

    def run():
        try:
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def two_chainers_at_once() -> list[int]:
    """Two beat copies: the advisory lock makes them take turns, the second finding nothing."""
    counts: list[int] = []
    start = threading.Barrier(2, timeout=15)

    def chainer():
        start.wait()
        counts.append(audit.audit_chain())

    threads = [_in_thread(chainer) for _ in range(2)]
    for thread, errors in threads:
        thread.join(30)
        assert not errors, errors
    return sorted(counts)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_twenty_writers_hold_their_transactions_open_together_and_the_chain_holds(monkeypatch):
    """Twenty writers each insert an entry and then wait, transaction open, until all twenty
    have inserted: had one insert waited on another's lock, the barrier would time out. Half
    commit, the chainer runs past their ids, then the other half (some with lower ids) commit:
    they are sealed later in the chain, by one of two chainers running at once, and the chain
    still verifies."""
    # No margin: the late half is found because the chainer saw their transactions open.
    monkeypatch.setattr(audit, "LATE_MARGIN", dt.timedelta(0))
    writers = 20
    inserted = threading.Barrier(writers + 1, timeout=15)
    first_half = threading.Barrier(writers // 2 + 1, timeout=15)
    second_half = threading.Barrier(writers // 2 + 1, timeout=15)
    ids: dict[int, int] = {}
    first_in = threading.Event()

    def writer(n: int):
        def run():
            with transaction.atomic():
                ids[n] = audit.audit_record("consent.grant", "notifications.consent", n).id
                first_in.set()
                inserted.wait()
                (first_half if n % 2 else second_half).wait()

        return run

    # Writer 0 takes the lowest id, and commits with the second half.
    threads = [_in_thread(writer(0))]
    assert first_in.wait(15)
    threads += [_in_thread(writer(n)) for n in range(1, writers)]
    inserted.wait()  # every writer has inserted and holds its transaction open
    assert audit.audit_chain() == 0  # the chainer neither waits on them nor sees them
    first_half.wait()
    for thread, _ in threads[1::2]:
        thread.join(15)
    sealed_first = audit.audit_chain()
    second_half.wait()
    for thread, errors in threads:
        thread.join(15)
        assert not errors, errors
    assert sealed_first == writers // 2
    assert two_chainers_at_once() == [0, writers // 2]

    result = audit.audit_verify()
    assert result.ok and result.checked == writers, result
    order = list(AuditSeal.objects.order_by("seq").values_list("entry_id", flat=True))
    assert sorted(order) == sorted(ids.values())
    # A lower id committed after the chainer had sealed higher ones: it sits later in the chain.
    late = [ids[n] for n in range(0, writers, 2)]
    early = [ids[n] for n in range(1, writers, 2)]
    assert min(late) < max(early)
    assert order[: writers // 2] == sorted(early) and order[writers // 2 :] == sorted(late)


# ---------------------------------------------------------------------------------- retention


def _entries_at(days_ago: float, n: int, action: str) -> list[AuditEntry]:
    at = timezone.now() - dt.timedelta(days=days_ago)
    return [
        AuditEntry.objects.create(at=at, actor="system", action=action, object_type="x")
        for _ in range(n)
    ]


@pytest.mark.django_db
def test_expiry_removes_only_expired_entries_and_the_rest_still_verifies():
    old = _entries_at(800, 12, "old.thing")
    recent = _entries_at(10, 8, "recent.thing")
    audit.audit_chain()

    removed = audit.audit_expire(timezone.now() - dt.timedelta(days=730), batch=5)

    assert removed == 12
    assert not AuditEntry.objects.filter(id__in=[e.id for e in old]).exists()
    assert AuditEntry.objects.filter(id__in=[e.id for e in recent]).count() == 8
    # Each batch said what it removed, in the trail itself.
    notes = list(AuditEntry.objects.filter(action="audit.expire").order_by("id"))
    assert [n.changes["removed"] for n in notes] == [5, 5, 2]
    anchor = AuditAnchor.objects.order_by("-seq").first()
    assert anchor is not None and anchor.seq == 12
    assert not AuditSeal.objects.filter(seq__lte=12).exists()

    audit.audit_chain()  # seals the expiry's own entries
    status, output = verify_command()
    assert status == 0, output
    assert audit.audit_verify().checked == 8 + len(notes)
    assert audit.audit_expire(timezone.now() - dt.timedelta(days=730)) == 0


@pytest.mark.django_db
def test_an_entry_newer_than_the_cut_keeps_the_links_after_it():
    _entries_at(800, 3, "old.thing")
    keep = _entries_at(1, 1, "recent.thing")
    after = _entries_at(800, 2, "old.but.later.in.chain")
    audit.audit_chain()
    assert audit.audit_expire(timezone.now() - dt.timedelta(days=730)) == 3
    assert AuditEntry.objects.filter(id__in=[keep[0].id, *(e.id for e in after)]).count() == 3
    audit.audit_chain()
    assert audit.audit_verify().ok


@pytest.mark.django_db
def test_expiry_never_anchors_past_a_broken_link():
    old = _entries_at(800, 6, "old.thing")
    audit.audit_chain()
    edit_behind_the_triggers(
        "UPDATE communication_auditentry SET actor = 'x' WHERE id = %s", [old[3].id]
    )
    assert audit.audit_expire(timezone.now() - dt.timedelta(days=730)) == 3
    status, output = verify_command()
    assert status == 1 and f"entry {old[3].id}" in output


@pytest.mark.django_db
def test_a_forged_anchor_fails_verification(settings):
    _entries_at(800, 6, "old.thing")
    _entries_at(1, 3, "recent.thing")
    audit.audit_chain()
    audit.audit_expire(timezone.now() - dt.timedelta(days=730))
    audit.audit_chain()
    assert audit.audit_verify().ok

    # Someone removes three more links and entries and leaves an anchor of their own making.
    doomed = list(AuditSeal.objects.filter(seq__gt=6).order_by("seq")[:3])
    with behind_the_triggers():
        AuditSeal.objects.filter(seq__in=[s.seq for s in doomed]).delete()
        AuditEntry.objects.filter(id__in=[s.entry_id for s in doomed]).delete()
    AuditAnchor.objects.create(
        seq=doomed[-1].seq,
        hash=doomed[-1].hash,
        signature="0" * 64,
        removed=3,
        before=timezone.now(),
    )
    status, output = verify_command()
    assert status == 1 and "not signed" in output
    # Reported at the first link after the forged anchor.
    assert audit.audit_verify().first_broken_id == AuditSeal.objects.order_by("seq")[0].entry_id

    # Signed with another key: still forged.
    with behind_the_triggers():
        AuditAnchor.objects.filter(seq=doomed[-1].seq).delete()
    AuditAnchor.objects.create(
        seq=doomed[-1].seq,
        hash=doomed[-1].hash,
        signature=audit._anchor_signature(doomed[-1].seq, doomed[-1].hash, "not-the-key"),
        removed=3,
        before=timezone.now(),
    )
    assert not audit.audit_verify().ok
    # And a removed anchor leaves the chain starting mid-way: broken too.
    with behind_the_triggers():
        AuditAnchor.objects.all().delete()
    assert not audit.audit_verify().ok


# ------------------------------------------------------------------------------------- the API


@pytest.fixture
def compliance_client(make_service_token):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_service_token('dpo', scopes=['compliance:read'])}"
    )
    return client


@pytest.mark.django_db
def test_the_api_needs_compliance_read(service_client, user_client):
    for client in (service_client, user_client):
        response = client.get("/api/v1/compliance/audit")
        assert response.status_code == 403
        assert response.json()["code"] == "scope_missing"
    assert APIClient().get("/api/v1/compliance/audit").status_code == 401


@pytest.mark.django_db
def test_the_api_filters_and_pages_newest_first(compliance_client):
    with audit.audit_actor("staff:ann", ip="10.0.0.1"):
        a = audit.audit_record("template.approve", "templates_app.template", "t1")
        b = audit.audit_record("template.reject", "templates_app.template", "t2")
    with audit.audit_actor("service:billing"):
        c = audit.audit_record("webhook.update", "notifications.webhook", "w1")
        d = audit.audit_record("template.approve", "templates_app.template", "t1")
    old = AuditEntry.objects.create(
        at=timezone.now() - dt.timedelta(days=3),
        actor="system",
        action="audit.expire",
        object_type="x",
    )

    def ids(**params):
        response = compliance_client.get("/api/v1/compliance/audit", params)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert ids() == [old.id, d.id, c.id, b.id, a.id]
    assert ids(actor="staff:ann") == [b.id, a.id]
    assert ids(action="template.approve") == [d.id, a.id]
    assert ids(object_type="templates_app.template", object_id="t1") == [d.id, a.id]
    assert ids(object_type="notifications.webhook") == [c.id]
    yesterday = (timezone.now() - dt.timedelta(days=1)).isoformat()
    assert ids(until=yesterday) == [old.id]
    assert old.id not in ids(since=yesterday)

    body = compliance_client.get("/api/v1/compliance/audit", {"limit": 2}).json()
    assert [row["id"] for row in body["results"]] == [old.id, d.id]
    row = body["results"][1]
    assert (row["actor"], row["action"], row["object_id"]) == ("service:billing", d.action, "t1")
    following = compliance_client.get(body["next"]).json()
    assert [r["id"] for r in following["results"]] == [c.id, b.id]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2026-13-40"},
        {"since": "2026-02-02", "until": "2026-02-01"},
        {"limit": "0"},
        {"cursor": "garbage"},
        {"action": "x" * 65},
    ],
)
def test_bad_filters_are_a_400_with_a_code(compliance_client, params):
    response = compliance_client.get("/api/v1/compliance/audit", params)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "validation_error"
