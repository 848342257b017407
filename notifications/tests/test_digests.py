"""Digests end to end: sends held for a user's digest (or their quiet hours) go out as one email
at the chosen time, through the real worker, and never before."""

from __future__ import annotations

import datetime as dt
import threading
import zoneinfo

import pytest
from django.db import connection
from django.utils import timezone

from analytics.models import Event
from communication.celery import queue as celery_queue
from communication.models import Category, User
from conftest import wait_for
from notifications.models import (
    Delivery,
    Digest,
    NotificationPreference,
    OutboxMessage,
    QuietHours,
)
from notifications.selectors import outbox_to
from notifications.services import digests
from notifications.tasks import release_digests

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")


@pytest.fixture
def kenji(db):
    return User.objects.create(
        username="kenji",
        external_id="kenji",
        email="kenji@example.com",
        name="Kenji",
        timezone="Asia/Tokyo",
        locale="en",
    )


def choose(as_user, user, *changes):
    response = as_user(user).put(
        "/api/v1/notifications/preferences", {"preferences": list(changes)}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def send(sender, user, subject, *, category="alerts", priority="normal"):
    response = sender.post(
        "/api/v1/notifications",
        {
            "recipients": [{"user_id": user.external_id}],
            "category": category,
            "channels": ["email"],
            "priority": priority,
            "content": {"subject": subject, "body": f"About {subject}.", "html": "<p>x</p>"},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()["notifications"][0]["deliveries"][0]


def digest_emails(user):
    return list(OutboxMessage.objects.filter(outbox_to(user.email), channel="email"))


def test_a_daily_digest_at_eight_local_sends_one_email_with_every_held_item_and_none_before(
    celery_worker, sender, as_user, kenji
):
    daily = {"mode": "daily", "digest_time": "08:00"}
    choose(
        as_user,
        kenji,
        {"category": "alerts", "channel": "email", **daily},
        {"category": "reminders", "channel": "email", **daily},
    )
    sent = [
        send(sender, kenji, "Disk almost full"),
        send(sender, kenji, "Pay the rent", category="reminders"),
        send(sender, kenji, "CPU on fire"),
    ]
    local_now = timezone.now().astimezone(TOKYO)
    eight = dt.datetime.combine(local_now.date(), dt.time(8), tzinfo=TOKYO)
    if eight <= local_now:
        eight += dt.timedelta(days=1)
    for delivery in sent:
        assert delivery["status"] == "held"
        assert dt.datetime.fromisoformat(delivery["scheduled_for"]) == eight
    # The user sees what waits, newest first.
    waiting = as_user(kenji).get("/api/v1/notifications/digest").json()["channels"]
    assert [(c["channel"], c["count"]) for c in waiting] == [("email", 3)]
    assert [i["title"] for i in waiting[0]["items"]] == [
        "CPU on fire",
        "Pay the rent",
        "Disk almost full",
    ]

    assert digests.digests_release_due(now=eight - dt.timedelta(seconds=1)) == 0
    assert digests.digests_release_due(now=eight) == 1
    wait_for(lambda: digest_emails(kenji), 30, what="the digest email")
    (email,) = digest_emails(kenji)
    assert email.subject == "Your digest: 3 updates"
    html = email.html
    # Grouped by category, the group of the newest item first, newest first within a group.
    order = [html.index(s) for s in ("Alerts", "CPU on fire", "Disk almost full", "Reminders")]
    assert order == sorted(order)
    assert html.index("Pay the rent") > html.index("Reminders")
    assert "Hello Kenji" in html and "more." not in html

    digest = Digest.objects.get(user=kenji)
    assert (digest.channel, digest.item_count, digest.reason) == ("email", 3, "digest")
    items = Delivery.objects.filter(id__in=[d["id"] for d in sent])
    assert {(d.status, d.reason, d.digest_id) for d in items} == {("sent", "digest", digest.id)}
    # Counted once, as the digest's own send: the items' events say they went in a digest.
    assert Event.objects.filter(delivery_id__in=[d.id for d in items], type="digested").count() == 3
    assert not Event.objects.filter(delivery_id__in=[d.id for d in items], type="sent").exists()
    wait_for(
        lambda: Delivery.objects.get(id=digest.delivery_id).status == "delivered",
        30,
        what="the digest's own delivery",
    )
    # Released once: the next minute finds nothing, and nothing waits any more.
    assert digests.digests_release_due(now=eight + dt.timedelta(minutes=1)) == 0
    assert as_user(kenji).get("/api/v1/notifications/digest").json() == {"channels": []}
    assert len(digest_emails(kenji)) == 1


def test_quiet_hours_hold_sends_and_release_them_as_one_digest(celery_worker, sender, kenji):
    local_now = timezone.now().astimezone(TOKYO)
    start = (local_now - dt.timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (local_now + dt.timedelta(hours=2)).time().replace(second=0, microsecond=0)
    QuietHours.objects.create(user=kenji, start=start, end=end)
    held = [send(sender, kenji, "First"), send(sender, kenji, "Second")]
    ends = {dt.datetime.fromisoformat(d["scheduled_for"]) for d in held}
    assert {d["status"] for d in held} == {"held"} and len(ends) == 1
    (window_end,) = ends
    assert window_end.astimezone(TOKYO).time() == end
    # Urgent goes now, whatever the hour.
    assert send(sender, kenji, "Breach", priority="urgent")["status"] == "queued"

    assert digests.digests_release_due(now=window_end - dt.timedelta(minutes=1)) == 0
    assert digests.digests_release_due(now=window_end) == 1
    wait_for(lambda: len(digest_emails(kenji)) == 2, 30, what="the urgent email and the digest")
    digest_email = next(e for e in digest_emails(kenji) if e.subject.startswith("Your digest"))
    assert "First" in digest_email.html and "Second" in digest_email.html
    assert Digest.objects.get(user=kenji).reason == "quiet hours"


def test_a_digest_past_the_cap_lists_the_newest_and_counts_the_rest(
    celery_worker, sender, as_user, kenji, settings
):
    settings.DIGEST_MAX_ITEMS = 2
    choose(as_user, kenji, {"category": "alerts", "channel": "email", "mode": "hourly"})
    held = [send(sender, kenji, f"Alert number {n}") for n in range(5)]
    due = dt.datetime.fromisoformat(held[0]["scheduled_for"])
    assert digests.digests_release_due(now=due) == 1
    wait_for(lambda: digest_emails(kenji), 30, what="the digest email")
    (email,) = digest_emails(kenji)
    assert "Alert number 4" in email.html and "Alert number 3" in email.html
    assert "Alert number 2" not in email.html
    assert "And 3 more." in email.html
    assert email.subject == "Your digest: 5 updates"
    # Every one of them is accounted for in the digest, listed or counted.
    assert Delivery.objects.filter(digest__user=kenji, status="sent").count() == 5


def test_two_releases_at_once_send_one_digest(sender, as_user, kenji):
    choose(as_user, kenji, {"category": "alerts", "channel": "email", "mode": "hourly"})
    held = [send(sender, kenji, f"Item {n}") for n in range(3)]
    due = dt.datetime.fromisoformat(held[0]["scheduled_for"])
    barrier = threading.Barrier(2)
    released: list[int] = []

    def release() -> None:
        try:
            barrier.wait(10)
            released.append(digests.digests_release_due(now=due))
        finally:
            connection.close()

    threads = [threading.Thread(target=release) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(released) == [0, 1]
    digest = Digest.objects.get(user=kenji)
    assert digest.item_count == 3
    assert Delivery.objects.filter(digest=digest).count() == 3
    assert Delivery.objects.filter(status="held").count() == 0


def test_a_category_turned_off_after_its_items_were_held_is_left_out(sender, as_user, kenji):
    choose(
        as_user,
        kenji,
        {"category": "alerts", "channel": "email", "mode": "hourly"},
        {"category": "reminders", "channel": "email", "mode": "hourly"},
    )
    keep = send(sender, kenji, "Keep me")
    drop = send(sender, kenji, "Drop me", category="reminders")
    # An unsubscribe link writes only "enabled": the release honours it.
    pref = NotificationPreference.objects.get(user=kenji, category_id="reminders", channel="email")
    pref.enabled = False
    pref.save(update_fields=["enabled"])
    due = dt.datetime.fromisoformat(keep["scheduled_for"])
    assert digests.digests_release_due(now=due) == 1
    assert Delivery.objects.get(id=drop["id"]).status == "cancelled"
    assert Delivery.objects.get(id=keep["id"]).status == "sent"
    data = Digest.objects.get().delivery.notification.request.data
    assert [e["title"] for e in data["entries"]] == ["Keep me"]


def test_the_beat_task_on_the_worker_releases_what_a_change_to_immediate_made_due(
    celery_worker, sender, as_user, kenji
):
    choose(as_user, kenji, {"category": "alerts", "channel": "email", "mode": "weekly"})
    held = [send(sender, kenji, "Weekly one"), send(sender, kenji, "Weekly two")]
    assert {d["status"] for d in held} == {"held"}
    # Back to immediate: what waits goes at the next release (the beat's, on the real clock).
    choose(as_user, kenji, {"category": "alerts", "channel": "email", "mode": "immediate"})
    release_digests.apply_async(queue=celery_queue("default"))
    wait_for(lambda: digest_emails(kenji), 30, what="the digest the beat's task released")
    (email,) = digest_emails(kenji)
    assert "Weekly one" in email.html and "Weekly two" in email.html
    assert send(sender, kenji, "Now")["status"] == "queued"


def test_a_digest_goes_out_whatever_the_categorys_frequency_cap(
    celery_worker, sender, as_user, kenji
):
    """A digest carries items already decided (and marked sent in it): the cap that counted the
    person's last alert must not skip it, or its items would be lost."""
    alerts = Category.objects.get(key="alerts")
    alerts.frequency_caps = {"email": {"limit": 1, "period": "7d"}}
    alerts.save()
    choose(as_user, kenji, {"category": "alerts", "channel": "email", "mode": "hourly"})
    urgent = send(sender, kenji, "Urgent one", priority="urgent")
    wait_for(lambda: digest_emails(kenji), 30, what="the urgent email, the cap's one place")
    held = [send(sender, kenji, "Held one"), send(sender, kenji, "Held two")]
    assert urgent["status"] == "queued" and {d["status"] for d in held} == {"held"}
    digests.digests_release_due(now=dt.datetime.fromisoformat(held[0]["scheduled_for"]))
    wait_for(lambda: len(digest_emails(kenji)) == 2, 30, what="the digest, past the cap")
    digest = Digest.objects.get(user=kenji)
    wait_for(
        lambda: Delivery.objects.get(id=digest.delivery_id).status == "delivered",
        30,
        what="the digest's delivery",
    )
