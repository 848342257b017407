"""Audit entries written by concurrent HTTP requests on a live server: the writers never wait on
one another (nor on a transaction holding an older entry open), and the chain then holds."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
from django.db import connection

from communication.audit import audit_chain, audit_verify
from communication.auth import tokens
from communication.models import AuditEntry, AuditSeal, User
from conftest import held_open

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

WRITERS = 20


def _put_preferences(base: str, token: str, enabled: bool) -> int:
    body = {"preferences": [{"category": "marketing", "channel": "email", "enabled": enabled}]}
    request = urllib.request.Request(
        f"{base}/api/v1/notifications/preferences",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def test_twenty_concurrent_requests_audit_without_waiting_and_the_chain_holds(live_asgi):
    users = [User.objects.create(username=f"w{i}", external_id=f"writer-{i}") for i in range(20)]
    user_tokens = [tokens.issue_user_token(user) for user in users]

    # Another transaction writes an entry and stays open the whole time: a lock taken by the
    # audit writer would hold every request behind it.
    with held_open(
        "INSERT INTO communication_auditentry (at, actor, action, object_type, "
        "object_id, changes, request_id) VALUES (now(), 'system', 'held.open', "
        "'test', '', '{}', '')"
    ):
        barrier = threading.Barrier(WRITERS)
        statuses: list[int] = []
        errors: list[BaseException] = []

        def write(i: int) -> None:
            try:
                barrier.wait()
                statuses.append(_put_preferences(live_asgi.url, user_tokens[i], enabled=i % 2 == 0))
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        assert statuses == [200] * WRITERS
        # All twenty committed while the older entry's transaction was still open.
        written = AuditEntry.objects.filter(action="preference.update")
        assert sorted(written.values_list("actor", flat=True)) == sorted(
            f"user:writer-{i}" for i in range(WRITERS)
        )
        # The chainer runs now: the held entry (a lower id) is not visible to it yet.
        assert audit_chain() == WRITERS

    # Committed late, sealed later in the chain; everything verifies.
    assert audit_chain() == 1
    held_entry = AuditEntry.objects.get(action="held.open")
    assert AuditSeal.objects.get(entry_id=held_entry.id).seq == WRITERS + 1
    result = audit_verify()
    assert result.ok and result.checked == WRITERS + 1, result
