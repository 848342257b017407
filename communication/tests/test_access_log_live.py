"""Access logging on the live gateway: a websocket opened with a token issued to a service acting
for a user (it receives and replays their messages) leaves one entry naming the service before
"ready"; the user's own socket leaves none."""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect

from communication.auth import tokens
from communication.models import AuditEntry
from communication.tests.test_access_log import acting_token
from messaging.tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_a_service_socket_for_a_user_leaves_one_entry_and_the_users_own_none(live_asgi):
    alice = make_user("alice")
    with connect(f"{live_asgi.ws_url}/ws/v1/?token={tokens.issue_user_token(alice)}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
    assert not AuditEntry.objects.filter(action="conversation.read_by_service").exists()

    with connect(f"{live_asgi.ws_url}/ws/v1/?token={acting_token(alice, 'assistant')}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        [entry] = AuditEntry.objects.filter(action="conversation.read_by_service")
    assert (entry.actor, entry.object_type, entry.object_id) == (
        "service:assistant",
        "communication.user",
        "alice",
    )
    assert entry.changes == {"on_behalf_of": "alice", "what": "websocket"}
