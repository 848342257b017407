"""Retention: rows past their kind's RETENTION_<KIND>_DAYS go, nothing else does."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from analytics import events
from analytics.models import Event
from communication import audit
from communication.compliance import retention
from communication.models import AuditEntry, Category, RealtimeEvent, User
from messaging import attachments
from messaging.models import Attachment, Conversation, Message, MessageEdit
from notifications.models import (
    BulkRecipient,
    Delivery,
    Notification,
    NotificationRequest,
    OutboxMessage,
    ProviderEvent,
)

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
DAYS = 30
EXPIRED = NOW - dt.timedelta(days=DAYS, minutes=1)
KEPT = NOW - dt.timedelta(days=DAYS) + dt.timedelta(minutes=1)
ROW_KINDS = (
    "notifications",
    "deliveries",
    "outbox",
    "provider_payloads",
    "realtime",
    "messages",
    "attachments",
)


@pytest.fixture(autouse=True)
def _retention(settings, tmp_path):
    settings.RETENTION_DAYS = {
        **{kind: 0 for kind in settings.RETENTION_DAYS},
        **{kind: DAYS for kind in ROW_KINDS},
    }
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }


def _aged(obj, at: dt.datetime, field: str = "created_at"):
    type(obj).objects.filter(pk=obj.pk).update(**{field: at})
    return obj


def _notification(request, user, at, status):
    notification = _aged(
        Notification.objects.create(
            request=request,
            user=user,
            recipient={"user_id": "alice"},
            category_id="ret",
            title="Your order",
        ),
        at,
    )
    delivery = _aged(
        Delivery.objects.create(
            notification=notification, channel="email", status=status, address="a@example.com"
        ),
        at,
    )
    return notification, delivery


def _attachment(user, at, name):
    attachment = Attachment(uploader=user, content_type="text/plain", size=5)
    attachment.file = attachments.storage().save(f"attachments/{name}.txt", ContentFile(b"hello"))
    attachment.save()
    return _aged(attachment, at)


def test_rows_past_their_retention_go_and_those_just_inside_it_stay(
    django_capture_on_commit_callbacks,
):
    alice = User.objects.create(username="alice", external_id="alice")
    Category.objects.create(key="ret", name="Retention")
    request = NotificationRequest.objects.create(caller="service:test", category_id="ret")
    old_done, _ = _notification(request, alice, EXPIRED, "delivered")
    new, new_delivery = _notification(request, alice, KEPT, "delivered")
    # Still to be sent: neither the notification nor its delivery may go, however old.
    old_queued, old_queued_delivery = _notification(request, alice, EXPIRED, "queued")
    # A request goes once nothing points at it: not while a bulk recipient waits.
    spent, waiting = (
        _aged(NotificationRequest.objects.create(caller="service:test", category_id="ret"), at)
        for at in (EXPIRED, EXPIRED)
    )
    BulkRecipient.objects.create(request=waiting, position=0, spec={"email": "b@example.com"})
    outbox = [
        _aged(OutboxMessage.objects.create(channel="email", to="a@example.com"), at)
        for at in (EXPIRED, KEPT)
    ]
    payloads = [
        _aged(ProviderEvent.objects.create(provider="p", event_key=key), at, "received_at")
        for key, at in (("old", EXPIRED), ("new", KEPT))
    ]
    realtime = [
        _aged(RealtimeEvent.objects.create(user=alice, seq=seq, type="t"), at)
        for seq, at in ((1, EXPIRED), (2, KEPT))
    ]
    conversation = Conversation.objects.create(type="group", created_by=alice)
    old_message, new_message = (
        _aged(
            Message.objects.create(conversation=conversation, sender=alice, content=text),
            at,
            "sent_at",
        )
        for text, at in (("old secret", EXPIRED), ("new secret", KEPT))
    )
    # An edit's earlier text goes with its message, however recent the edit.
    old_edit, new_edit = (
        MessageEdit.objects.create(message=message, previous_content="draft", edited_by=alice)
        for message in (old_message, new_message)
    )
    old_file, new_file = _attachment(alice, EXPIRED, "old"), _attachment(alice, KEPT, "new")
    store = attachments.storage()
    assert store.exists(old_file.file) and store.exists(new_file.file)

    with django_capture_on_commit_callbacks(execute=True):
        counts = retention.retention_run(now=NOW)

    # The notifications kind counts the spent request, the messages kind the old edit.
    assert counts == {kind: 1 for kind in ROW_KINDS} | {"notifications": 2, "messages": 2}
    assert set(NotificationRequest.objects.values_list("id", flat=True)) == {request.id, waiting.id}
    assert not NotificationRequest.objects.filter(id=spent.id).exists()
    assert not MessageEdit.objects.filter(id=old_edit.id).exists()
    assert list(MessageEdit.objects.values_list("id", flat=True)) == [new_edit.id]
    assert set(Notification.objects.values_list("id", flat=True)) == {new.id, old_queued.id}
    assert not Notification.objects.filter(id=old_done.id).exists()
    assert set(Delivery.objects.values_list("id", flat=True)) == {
        new_delivery.id,
        old_queued_delivery.id,
    }
    assert list(OutboxMessage.objects.values_list("id", flat=True)) == [outbox[1].id]
    assert list(ProviderEvent.objects.values_list("id", flat=True)) == [payloads[1].id]
    assert list(RealtimeEvent.objects.values_list("id", flat=True)) == [realtime[1].id]
    # Messages are tombstoned: the row keeps its place in the conversation, its text goes.
    assert Message.objects.get(id=old_message.id).content == ""
    assert Message.objects.get(id=new_message.id).content == "new secret"
    assert list(Attachment.objects.values_list("id", flat=True)) == [new_file.id]
    assert not store.exists(old_file.file)
    assert store.exists(new_file.file)
    entry = AuditEntry.objects.get(action="retention.run")
    assert (entry.object_type, entry.actor, entry.changes) == (
        "compliance.retention",
        "system",
        counts,
    )

    # Nothing is left to expire: the second run changes nothing and says so.
    with django_capture_on_commit_callbacks(execute=True):
        assert retention.retention_run(now=NOW) == {kind: 0 for kind in ROW_KINDS}
    assert Message.objects.get(id=new_message.id).content == "new secret"
    assert AuditEntry.objects.filter(action="retention.run").count() == 2


def test_kinds_kept_forever_are_not_touched(settings):
    settings.RETENTION_DAYS = {kind: 0 for kind in settings.RETENTION_DAYS}
    _aged(OutboxMessage.objects.create(channel="email", to="a@example.com"), EXPIRED)
    assert retention.retention_run(now=NOW) == {}
    assert OutboxMessage.objects.count() == 1


def test_events_go_by_their_partitions_path(settings):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "events": 40}
    old, recent = NOW - dt.timedelta(days=200), NOW - dt.timedelta(days=1)
    events.record_many(
        [
            {"type": "sent", "occurred_at": old, "channel": "email"},
            {"type": "sent", "occurred_at": recent, "channel": "email"},
        ]
    )
    counts = retention.retention_run(now=NOW)
    assert counts["events"] == 1
    assert list(Event.objects.values_list("occurred_at", flat=True)) == [recent]


def test_a_run_while_another_holds_the_lock_does_nothing(settings):
    _aged(OutboxMessage.objects.create(channel="email", to="a@example.com"), EXPIRED)
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute(f"SELECT pg_advisory_lock({retention.LOCK_SQL})")
        assert retention.retention_run(now=NOW) == {}
    assert OutboxMessage.objects.count() == 1
    assert not AuditEntry.objects.filter(action="retention.run").exists()
    assert retention.retention_run(now=NOW)["outbox"] == 1


def test_the_beat_runs_it_hourly_on_the_default_queue():
    # A deployment that ran the earlier release still has the old prune's entry.
    interval = IntervalSchedule.objects.create(every=3600, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="realtime-events-prune",
        task="communication.tasks.prune_realtime_events",
        interval=interval,
    )
    call_command("setup_schedules", verbosity=0)
    task = PeriodicTask.objects.get(name="compliance-retention")
    assert (task.task, task.interval.every) == ("communication.tasks.retention_run", 3600)
    assert task.queue.endswith("default")
    assert not PeriodicTask.objects.filter(task__contains="prune_realtime_events").exists()


def test_the_audit_trail_expires_through_its_anchored_path(settings):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "audit": DAYS}
    old = AuditEntry.objects.create(at=EXPIRED, actor="system", action="old.thing", object_type="x")
    new = AuditEntry.objects.create(at=KEPT, actor="system", action="new.thing", object_type="x")
    counts = retention.retention_run(now=NOW)
    assert counts["audit"] == 1
    assert not AuditEntry.objects.filter(id=old.id).exists()
    assert AuditEntry.objects.filter(id=new.id).exists()
    # What is left still verifies, the run's own entry included.
    audit.audit_chain()
    assert audit.audit_verify().ok
