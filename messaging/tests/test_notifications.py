"""Offline participants are notified through the notification pipeline, once per burst."""

from __future__ import annotations

import re
import uuid

import pytest

from communication.celery import queue
from conftest import wait_for
from messaging.tasks import notify_offline
from messaging.tests.conftest import create_conversation, make_user, post_message
from notifications.models import Notification

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def worker(start_worker, settings):
    prefix = f"msg{uuid.uuid4().hex[:6]}-"
    w = start_worker({}, prefix)
    settings.CELERY_QUEUE_PREFIX = prefix  # our tasks go to this worker's queues only
    settings.MESSAGING_NOTIFY_DELAY_SECONDS = 1.0
    return w


def wait_until_notify_tasks_ran(worker) -> None:
    """Waits until the worker has run every ``notify_offline`` task published so far, those with
    a countdown included: a task published after them on the same queue reaches the worker after
    them (each is logged as received on arrival, its countdown or not), so once that one has run,
    the received ones are all the worker will get."""
    marker = notify_offline.apply_async(args=(0,), queue=queue("default")).id
    wait_for(
        lambda: f"notify_offline[{marker}] succeeded" in worker.log.read_text(),
        30,
        what="the worker to run the marker task",
    )

    def all_ran() -> bool:
        log = worker.log.read_text()
        received = set(re.findall(r"notify_offline\[([0-9a-f-]+)\] received", log))
        ran = set(re.findall(r"notify_offline\[([0-9a-f-]+)\] (?:succeeded|raised)", log))
        return received <= ran

    wait_for(all_ran, 30, what="the burst's scheduled tasks to run")


def test_offline_participant_is_notified_once_for_a_burst(worker, as_user):
    tag = uuid.uuid4().hex[:6]
    alice, bob, carol = (make_user(f"{n}-{tag}") for n in ("alice", "bob", "carol"))
    a = as_user(alice)
    conv = create_conversation(
        a, "group", [bob.external_id, carol.external_id], title="Weekend plans"
    )
    as_user(carol).post(f"/api/v1/conversations/{conv['id']}/mute", {}, format="json")
    for i in range(5):
        post_message(a, conv["id"], f"message {i}")

    def bobs():
        return list(Notification.objects.filter(user=bob, category_id="messages"))

    found = wait_for(bobs, 20, what="bob's notification")
    wait_until_notify_tasks_ran(worker)
    assert len(bobs()) == 1
    note = bobs()[0]
    assert note.title == "Weekend plans"
    assert note.body.startswith("5 new messages") and "message 4" in note.body
    assert note.data["conversation_id"] == conv["id"] and note.data["count"] == 5
    assert found[0].id == note.id
    # Muted carol and the sender get nothing.
    assert not Notification.objects.filter(user__in=[alice, carol]).exists()

    # A later burst: one more notification, covering only the new messages.
    last = post_message(a, conv["id"], "one more")
    wait_for(lambda: len(bobs()) == 2, 20, what="second notification")
    newest = Notification.objects.filter(user=bob).order_by("-created_at").first()
    assert newest.body == "one more" and newest.data["message_id"] == last["id"]
