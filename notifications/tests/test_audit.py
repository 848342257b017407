"""The audit trail of notifications: a user's preferences, quiet hours and consents, devices, a
caller's cancel and reschedule of a scheduled send, suppressions added by hand; each one entry
naming who acted, never an address or a token; a send itself writes none; a change that rolls
back leaves none."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import transaction
from django.utils import timezone

from communication.models import AuditEntry
from notifications import push, services
from notifications.models import Suppression

pytestmark = pytest.mark.django_db

TOKEN = "fcm-canary-token-0123456789"


def _entries():
    return list(AuditEntry.objects.order_by("id"))


def _everything() -> str:
    return json.dumps(list(AuditEntry.objects.values_list("changes", flat=True)))


def test_a_users_choices_and_devices_are_recorded(alice, as_user):
    client = as_user(alice)
    response = client.put(
        "/api/v1/notifications/preferences",
        {
            "preferences": [{"category": "activity", "channel": "push", "enabled": False}],
            "quiet_hours": {"start": "22:00", "end": "07:00"},
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    consent = client.post(
        "/api/v1/notifications/consents",
        {
            "channel": "email",
            "category": "marketing",
            "granted": True,
            "source": "signup",
            "evidence": {"form": "alice@example.com ticked the box"},
        },
        format="json",
    )
    assert consent.status_code == 201, consent.content
    withdrawn = client.post(
        "/api/v1/notifications/consents",
        {"channel": "email", "category": "marketing", "granted": False, "source": "settings"},
        format="json",
    )
    assert withdrawn.status_code == 201
    device = client.post(
        "/api/v1/devices", {"platform": "android", "token": TOKEN, "app_id": "app"}, format="json"
    )
    assert device.status_code == 201, device.content
    # The app registering again at its next start is no change the trail keeps.
    again = client.post("/api/v1/devices", {"platform": "android", "token": TOKEN}, format="json")
    assert again.status_code == 200
    assert client.delete(f"/api/v1/devices/{device.json()['id']}").status_code == 204

    entries = _entries()
    assert [(e.action, e.actor) for e in entries] == [
        ("preference.update", "user:alice"),
        ("quiet_hours.update", "user:alice"),
        ("consent.grant", "user:alice"),
        ("consent.withdraw", "user:alice"),
        ("device.register", "user:alice"),
        ("device.remove", "user:alice"),
    ]
    preference, quiet, grant = entries[0], entries[1], entries[2]
    assert (preference.object_type, preference.object_id) == ("communication.user", str(alice.pk))
    assert preference.changes == {"activity.push": "disabled"}
    assert quiet.changes == {
        "enabled": [None, True],
        "end": [None, "07:00:00"],
        "start": [None, "22:00:00"],
    }
    assert grant.object_type == "notifications.consent"
    assert grant.changes["evidence"] == "changed" and grant.changes["source"] == "signup"
    assert entries[4].changes == {"user": str(alice.pk), "platform": "android"}
    assert all(e.request_id and e.ip for e in entries)
    everything = _everything()
    assert TOKEN not in everything and "alice@example.com" not in everything


def test_cancel_and_reschedule_are_recorded_but_not_the_send(sender, alice):
    later = (timezone.now() + dt.timedelta(hours=2)).isoformat()
    created = sender.post(
        "/api/v1/notifications/schedule",
        {
            "recipients": [{"email": "someone@example.com"}],
            "category": "reminders",
            "channels": ["email"],
            "content": {"subject": "Hi", "text": "Secret plans"},
            "scheduled_at": later,
        },
        format="json",
    )
    assert created.status_code == 202, created.content
    assert not AuditEntry.objects.exists()  # a send is an event, not an audit entry
    url = f"/api/v1/notifications/requests/{created.json()['request_id']}"
    new_time = timezone.now() + dt.timedelta(hours=5)
    assert (
        sender.patch(url, {"scheduled_at": new_time.isoformat()}, format="json").status_code == 200
    )
    assert sender.delete(url).status_code == 200

    entries = _entries()
    assert [(e.action, e.actor, e.object_id) for e in entries] == [
        ("notification_request.reschedule", "service:billing", created.json()["request_id"]),
        ("notification_request.cancel", "service:billing", created.json()["request_id"]),
    ]
    assert entries[1].changes == {"deliveries_cancelled": 1}
    assert "someone@example.com" not in _everything()


def test_a_suppression_added_by_hand_is_recorded_by_id_not_address():
    manual = services.suppression_add(
        channel="email", address="Hand@Example.com", reason=Suppression.Reason.MANUAL
    )
    services.suppression_add(
        channel="email", address="bounced@example.com", reason=Suppression.Reason.HARD_BOUNCE
    )
    (entry,) = _entries()
    assert (entry.action, entry.object_id) == ("suppression.add", str(manual.pk))
    assert entry.changes == {"channel": "email", "reason": "manual", "address": "changed"}
    assert "example.com" not in _everything()


def test_a_change_that_rolls_back_leaves_no_entry(alice):
    with pytest.raises(RuntimeError), transaction.atomic():
        push.device_register(user=alice, platform="android", token=TOKEN)
        raise RuntimeError
    assert not AuditEntry.objects.exists()
