"""``manage.py rotate_keys``: what an older key wrote is re-encrypted with the newest, in
batches, resumably; afterwards the old key can be removed and everything still decrypts."""

from __future__ import annotations

import base64
import os

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from communication import realtime
from communication.fields import header
from communication.keyrotation import rotate, stale_counts
from communication.models import AuditEntry, RealtimeEvent, User

pytestmark = pytest.mark.django_db


def key(key_id: str) -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(32)).decode()}"


def raw_sealed() -> list[bytes]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT sealed FROM communication_realtimeevent ORDER BY id")
        return [bytes(v) for (v,) in cursor.fetchall()]


def test_rotation_moves_every_value_to_the_new_key_and_resumes_after_an_interruption(settings):
    old, new = key("old"), key("new")
    settings.FIELD_ENCRYPTION_KEYS = [old]
    users = [User.objects.create(username=f"u{i}") for i in range(5)]
    with transaction.atomic():
        for i, user in enumerate(users):
            realtime.publish_event(user.pk, "note", {"text": f"secret {i}"})
    assert all(v.startswith(header("old")) for v in raw_sealed())

    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    assert stale_counts() == {"communication_realtimeevent": 5}
    with pytest.raises(CommandError):
        call_command("rotate_keys", "--check")

    class KilledError(Exception):
        pass

    def stop(table, done):
        raise KilledError

    with pytest.raises(KilledError):  # killed after its first batch of two
        rotate(batch=2, progress=stop)
    assert stale_counts() == {"communication_realtimeevent": 3}  # that batch committed

    call_command("rotate_keys", "--batch-size", "2")
    assert stale_counts() == {}
    call_command("rotate_keys", "--check")
    assert all(v.startswith(header("new")) for v in raw_sealed())
    entry = AuditEntry.objects.filter(action="keys.rotate").latest("id")
    assert entry.actor == "command:rotate_keys" and entry.object_id == "new"
    assert entry.changes["rows"] == 3

    settings.FIELD_ENCRYPTION_KEYS = [new]  # the old key removed
    texts = sorted(e.payload["text"] for e in RealtimeEvent.objects.all())
    assert texts == [f"secret {i}" for i in range(5)]
