"""Digest rules without a worker: who is held and until when (DST included), who bypasses, and
the preferences API that sets the modes."""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo

import pytest
from django.db import connection

from analytics.models import Event
from communication.models import Category
from notifications import services
from notifications.models import Delivery, NotificationPreference
from notifications.resolution import Mode, next_digest_at
from notifications.services import digests

pytestmark = pytest.mark.django_db

UTC = dt.UTC
PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


# ------------------------------------------------------------------------------- the slots


def test_daily_slot_keeps_the_local_time_across_spring_forward():
    # Paris goes from UTC+1 to UTC+2 on 29 March 2026: 08:00 local is 07:00 then 06:00 UTC.
    daily = Mode("daily", dt.time(8, 0))
    first = next_digest_at(at("2026-03-28T07:00:00+00:00"), daily, PARIS)
    assert first == at("2026-03-29T06:00:00+00:00")
    assert next_digest_at(at("2026-03-28T06:59:00+00:00"), daily, PARIS) == at(
        "2026-03-28T07:00:00+00:00"
    )


def test_a_daily_time_the_clocks_skip_goes_out_after_the_jump():
    # 02:30 does not exist in Paris on 29 March 2026 (02:00 → 03:00).
    skipped = next_digest_at(at("2026-03-28T12:00:00+00:00"), Mode("daily", dt.time(2, 30)), PARIS)
    assert skipped == at("2026-03-29T01:30:00+00:00")
    assert skipped.astimezone(zoneinfo.ZoneInfo(PARIS)).hour == 3


def test_hourly_slots_are_real_hours_across_fall_back():
    # New York repeats 01:00-02:00 on 1 November 2026: hourly at :15 gives each real hour once.
    hourly = Mode("hourly", dt.time(0, 15))
    now = at("2026-11-01T00:20:00-04:00")
    slots = []
    for _ in range(4):
        now = next_digest_at(now, hourly, NEW_YORK)
        slots.append(now)
    assert [s - slots[0] for s in slots] == [dt.timedelta(hours=h) for h in range(4)]
    local = [s.astimezone(zoneinfo.ZoneInfo(NEW_YORK)).strftime("%H:%M %Z") for s in slots]
    assert local == ["01:15 EDT", "01:15 EST", "02:15 EST", "03:15 EST"]


def test_weekly_slot_is_the_chosen_weekday_at_the_local_time():
    # Sunday 08:00 in New York, asked on Saturday 31 October 2026: the Sunday after the switch.
    weekly = Mode("weekly", dt.time(8, 0), weekday=6)
    slot = next_digest_at(at("2026-10-31T12:00:00+00:00"), weekly, NEW_YORK)
    assert slot == at("2026-11-01T13:00:00+00:00")  # 08:00 EST
    # On the day itself, after the time: a week later.
    assert next_digest_at(slot, weekly, NEW_YORK) == at("2026-11-08T13:00:00+00:00")


# ------------------------------------------------------------------------------- the send


def send(sender, category="alerts", channels=("email", "in_app"), priority="normal"):
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": "alice"}],
            "category": category,
            "channels": list(channels),
            "priority": priority,
            "content": {"subject": "Hi", "title": "Hi", "body": "Hello."},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    return {d["channel"]: d for d in response.json()["notifications"][0]["deliveries"]}


def test_daily_mode_holds_email_but_not_in_app_and_urgent_bypasses(sender, alice):
    NotificationPreference.objects.create(
        user=alice, category_id="alerts", channel="email", enabled=True, mode="daily"
    )
    normal = send(sender)
    assert normal["email"]["status"] == "held"
    assert normal["email"]["reason"] == "daily digest"
    # The inbox item is the message: in-app is never held.
    assert normal["in_app"]["status"] == "delivered"
    assert send(sender, priority="urgent")["email"]["status"] == "queued"


def test_mandatory_categories_bypass_digests_and_quiet_hours(sender, alice):
    security = Category.objects.get(key="security")
    security.digest_modes = {"email": "daily"}
    security.save()  # (the send path's cache forgets it)
    assert send(sender, category="security", channels=["email"])["email"]["status"] == "queued"


def test_a_category_default_mode_holds_until_the_user_chooses(sender, alice, as_user):
    reminders = Category.objects.get(key="reminders")
    reminders.digest_modes = {"email": "weekly"}
    reminders.digest_time, reminders.digest_weekday = dt.time(9, 30), 4
    reminders.save()
    held = send(sender, category="reminders", channels=["email"])["email"]
    assert held["status"] == "held"
    local = dt.datetime.fromisoformat(held["scheduled_for"]).astimezone(zoneinfo.ZoneInfo(PARIS))
    assert (local.weekday(), local.hour, local.minute) == (4, 9, 30)
    # Choosing immediate moves what waits to the next release, and later sends go at once.
    put = as_user(alice).put(
        "/api/v1/notifications/preferences",
        {"preferences": [{"category": "reminders", "channel": "email", "mode": "immediate"}]},
        format="json",
    )
    assert put.status_code == 200, put.content
    moved = Delivery.objects.get(id=held["id"])
    assert moved.status == "held" and moved.scheduled_for <= dt.datetime.now(UTC)
    assert send(sender, category="reminders", channels=["email"])["email"]["status"] == "queued"


# ------------------------------------------------------------------------- the preferences API


def test_preferences_round_trip_modes_and_keep_enabled(alice, as_user):
    client = as_user(alice)
    put = client.put(
        "/api/v1/notifications/preferences",
        {
            "preferences": [
                {
                    "category": "alerts",
                    "channel": "email",
                    "mode": "weekly",
                    "digest_time": "18:45",
                    "digest_weekday": 4,
                },
                {"category": "activity", "channel": "push", "enabled": False},
            ]
        },
        format="json",
    )
    assert put.status_code == 200, put.content
    body = client.get("/api/v1/notifications/preferences").json()
    assert body == put.json()
    alerts = next(c for c in body["categories"] if c["key"] == "alerts")
    assert alerts["channels"]["email"] is True  # a digest is still "on"
    assert alerts["modes"]["email"] == {
        "mode": "weekly",
        "digest_time": "18:45",
        "digest_weekday": 4,
    }
    activity = next(c for c in body["categories"] if c["key"] == "activity")
    assert activity["channels"]["push"] is False
    assert activity["modes"]["push"]["mode"] == "off"
    # "enabled": true alone keeps the digest the user chose.
    client.put(
        "/api/v1/notifications/preferences",
        {"preferences": [{"category": "alerts", "channel": "email", "enabled": True}]},
        format="json",
    )
    pref = NotificationPreference.objects.get(user=alice, category_id="alerts", channel="email")
    assert (pref.mode, pref.enabled, pref.digest_time) == ("weekly", True, dt.time(18, 45))


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"mode": "monthly"}, "invalid_mode", "mode"),
        ({"mode": 7}, "invalid_mode", "mode"),
        ({"mode": "daily", "digest_time": "25:00"}, "invalid_digest_time", "digest_time"),
        ({"mode": "daily", "digest_time": "8 o'clock"}, "invalid_digest_time", "digest_time"),
        ({"mode": "weekly", "digest_weekday": 7}, "invalid_digest_weekday", "digest_weekday"),
        (
            {"mode": "weekly", "digest_weekday": "friday"},
            "invalid_digest_weekday",
            "digest_weekday",
        ),
        ({"mode": "weekly", "digest_weekday": True}, "invalid_digest_weekday", "digest_weekday"),
        ({"mode": "off", "enabled": True}, "inconsistent_mode", "enabled"),
        ({"channel": "in_app", "mode": "daily"}, "mode_not_allowed", "mode"),
        ({"category": "security", "mode": "daily"}, "mode_not_allowed", "mode"),
        ({}, "invalid_mode", ""),
    ],
)
def test_bad_modes_are_refused_with_a_code_and_change_nothing(alice, as_user, change, code, field):
    item = {"category": "alerts", "channel": "email", **change}
    response = as_user(alice).put(
        "/api/v1/notifications/preferences", {"preferences": [item]}, format="json"
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == code
    assert f"preferences[0]{'.' + field if field else ''}" in body["fields"]
    assert not NotificationPreference.objects.filter(user=alice).exists()


def test_nul_bytes_in_a_mode_are_a_400(alice, as_user):
    response = as_user(alice).put(
        "/api/v1/notifications/preferences",
        {"preferences": [{"category": "alerts", "channel": "email", "mode": "da\x00ily"}]},
        format="json",
    )
    assert response.status_code == 400


def test_the_digest_page_needs_a_user_and_bounds_its_limit(alice, as_user, sender):
    assert sender.get("/api/v1/notifications/digest").status_code == 403
    bad = as_user(alice).get("/api/v1/notifications/digest?limit=abc")
    assert bad.status_code == 400
    assert as_user(alice).get("/api/v1/notifications/digest?limit=100000").status_code == 200


def test_a_digest_to_an_address_suppressed_since_takes_its_items_with_it(sender, alice):
    NotificationPreference.objects.create(
        user=alice, category_id="alerts", channel="email", enabled=True, mode="hourly"
    )
    held = [send(sender, channels=["email"])["email"] for _ in range(2)]
    services.suppression_add(channel="email", address=alice.email, reason="hard_bounce")
    due = dt.datetime.fromisoformat(held[0]["scheduled_for"])
    digest = digests.digest_release(alice.pk, "email", now=due)
    assert digest is not None and digest.delivery.status == "suppressed"
    items = Delivery.objects.filter(id__in=[h["id"] for h in held])
    assert {(d.status, d.reason, d.digest_id) for d in items} == {
        ("suppressed", "hard_bounce", digest.id)
    }
    # Nothing is held any more: the next release has nothing to send.
    assert digests.digests_release_due(now=due) == 0


def test_the_release_finds_due_held_deliveries_and_a_digests_items_by_index():
    """With sequential scans off, the release's scan and a digest's items are planned on their
    partial indexes (on a table this small PostgreSQL would otherwise scan)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {digests.DUE_GROUPS}", [dt.datetime.now(UTC), 200])
        due = "\n".join(row[0] for row in cursor.fetchall())
        sql, params = Delivery.objects.filter(digest_id=uuid.uuid4()).query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        items = "\n".join(row[0] for row in cursor.fetchall())
    assert "delivery_held_due" in due, due
    assert "delivery_digest" in items, items


def test_turning_a_category_off_cancels_what_it_holds(sender, alice, as_user):
    NotificationPreference.objects.create(
        user=alice, category_id="alerts", channel="email", enabled=True, mode="weekly"
    )
    held = send(sender, channels=["email"])["email"]
    put = as_user(alice).put(
        "/api/v1/notifications/preferences",
        {"preferences": [{"category": "alerts", "channel": "email", "mode": "off"}]},
        format="json",
    )
    assert put.status_code == 200, put.content
    delivery = Delivery.objects.get(id=held["id"])
    assert (delivery.status, delivery.reason) == ("cancelled", "opted out")
    assert Event.objects.filter(delivery_id=delivery.id, type="cancelled").exists()
    assert as_user(alice).get("/api/v1/notifications/digest").json() == {"channels": []}


def test_a_huge_preferences_list_is_refused(alice, as_user):
    item = {"category": "alerts", "channel": "email", "mode": "daily"}
    response = as_user(alice).put(
        "/api/v1/notifications/preferences", {"preferences": [item] * 201}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert not NotificationPreference.objects.filter(user=alice).exists()
