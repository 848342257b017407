"""Encryption at rest, end to end: after a conversation, an edit, the offline notification about
it, and sends to an address and a number delivered by a real worker, neither the message's text
nor the address or number is found in plaintext in any text, JSON or bytea column of the
database, nor in the logs; rotating the keys leaves every encrypted value readable with the new
key alone."""

from __future__ import annotations

import base64
import os

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection

from communication.keyrotation import encrypted_tables, stale_counts
from communication.models import User
from conftest import wait_for
from notifications.models import Delivery, Notification, OutboxMessage

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SECRET = "zebra-canary-7781 the vault code is 4471"
EMAIL = "canary.7781@example.net"
PHONE = "+33612347781"

# Where a value may legitimately be plain: the user's own row holds their address.
ALLOWED = {("communication_user", "email"), ("communication_user", "phone")}


def columns() -> list[tuple[str, str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
            "AND c.data_type IN ('text', 'character varying', 'json', 'jsonb', 'bytea', 'ARRAY')"
        )
        return cursor.fetchall()


def found(needle: str) -> list[str]:
    """Every ``table.column`` holding ``needle`` in plaintext (bytea: as its UTF-8 bytes)."""
    hits = []
    with connection.cursor() as cursor:
        for table, column, kind in columns():
            if (table, column) in ALLOWED:
                continue
            if kind == "bytea":
                condition = f"position(convert_to(%s, 'UTF8') in \"{column}\") > 0"
            else:
                condition = f"\"{column}\"::text ILIKE '%%' || %s || '%%'"
            cursor.execute(f'SELECT 1 FROM "{table}" WHERE {condition} LIMIT 1', [needle])  # noqa: S608
            if cursor.fetchone():
                hits.append(f"{table}.{column}")
    return hits


def test_nothing_personal_is_plaintext_in_the_database_or_logs_and_rotation_keeps_it_readable(
    celery_worker, user_client, service_client, settings, capfd
):
    settings.MESSAGING_NOTIFY_DELAY_SECONDS = 0
    bob = User.objects.create(username="bob", external_id="bob", email="bob@example.org")
    client = user_client
    conversation = client.post(
        "/api/v1/conversations", {"type": "direct", "participants": ["bob"]}, format="json"
    ).json()
    url = f"/api/v1/conversations/{conversation['id']}/messages"
    sent = client.post(url, {"content": f"**{SECRET}** see https://example.org"}, format="json")
    assert sent.status_code == 201, sent.content
    edited = client.put(
        f"/api/v1/messages/{sent.json()['id']}", {"content": f"{SECRET} (edited)"}, format="json"
    )
    assert edited.status_code == 200, edited.content
    # Bob is offline: the worker sends him the notification about the message.
    wait_for(
        lambda: Notification.objects.filter(user=bob, category__key="messages").exists(),
        30,
        what="the offline notification",
    )

    response = service_client.post(
        "/api/v1/notifications",
        {
            "recipients": [{"email": EMAIL}, {"phone": PHONE}, {"user_id": "bob"}],
            "channels": ["email", "sms", "in_app"],
            "content": {"subject": SECRET, "title": SECRET, "body": f"{SECRET} for you"},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    wait_for(
        lambda: (
            OutboxMessage.objects.count() >= 2
            and not Delivery.objects.filter(status__in=["queued", "sending"]).exists()
        ),
        30,
        what="the deliveries",
    )

    # What is stored reads back as it was written...
    assert {m.to for m in OutboxMessage.objects.all()} >= {EMAIL, PHONE}
    assert any(SECRET in (n.body or "") for n in Notification.objects.filter(user=bob))
    # ...and none of it is in plaintext in the database,
    hits = {
        needle: found(needle)
        for needle in (SECRET, "zebra-canary", EMAIL, "canary.7781", PHONE, "612347781")
    }
    assert not any(hits.values()), hits
    # nor in the logs of the web side (this process) or the worker.
    out, err = capfd.readouterr()
    logs = out + err + celery_worker.log.read_text()
    for needle in ("zebra-canary", EMAIL, PHONE):
        assert needle not in logs

    # The keys rotated: everything decrypts with the new key alone.
    new_key = f"next:{base64.urlsafe_b64encode(os.urandom(32)).decode()}"
    settings.FIELD_ENCRYPTION_KEYS = [new_key, *settings.FIELD_ENCRYPTION_KEYS]
    assert stale_counts()
    call_command("rotate_keys")
    assert stale_counts() == {}
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    read = 0
    for model, _ in encrypted_tables():
        fields = [f.name for f in model._meta.concrete_fields]
        read += len(list(model._base_manager.values_list(*fields)))
    assert read > 10
    assert apps.get_model("messaging", "Message").objects.get(id=sent.json()["id"]).content == (
        f"{SECRET} (edited)"
    )
