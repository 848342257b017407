"""Publishing deliveries to the broker: what a process commits within the linger goes out as one
task per queue, read back here from the real broker."""

from __future__ import annotations

import time
import uuid

import pytest
from kombu import Exchange, Queue

from communication.celery import app
from notifications import enqueue


@pytest.fixture
def prefix(settings):
    settings.CELERY_QUEUE_PREFIX = f"enq{uuid.uuid4().hex[:8]}-"  # queues nothing consumes
    return settings.CELERY_QUEUE_PREFIX


def tasks_in(name: str) -> list[tuple[str, list[str]]]:
    """Takes every message off the queue ``name``: ``(task name, delivery ids)`` each."""
    taken = []
    with app.connection_for_read() as connection:
        simple = connection.SimpleQueue(Queue(name, Exchange(name), routing_key=name))
        try:
            while True:
                try:
                    message = simple.get(block=False)
                except simple.Empty:
                    break
                message.ack()
                args, _kwargs, _embed = message.decode()
                taken.append((message.headers["task"], args[0]))
        finally:
            simple.close()
    return taken


def wait_for_tasks(name: str, ids: int = 1, timeout: float = 5.0) -> list[tuple[str, list[str]]]:
    """The tasks published to ``name`` until they carry ``ids`` delivery ids (or the deadline):
    the publisher sends batches one after another."""
    deadline = time.monotonic() + timeout
    found: list[tuple[str, list[str]]] = []
    while True:
        found += tasks_in(name)
        if sum(len(batch) for _task, batch in found) >= ids or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_what_is_committed_within_the_linger_goes_out_as_one_task_per_queue(settings, prefix):
    settings.DELIVERY_ENQUEUE_LINGER_MS = 300
    normal = [str(uuid.uuid4()) for _ in range(20)]
    low = str(uuid.uuid4())
    for delivery_id in normal:
        enqueue.enqueue_many([(delivery_id, "normal")])
    enqueue.enqueue_many([(low, "low")])

    assert tasks_in(f"{prefix}transactional") == [], "held for the linger"
    transactional = wait_for_tasks(f"{prefix}transactional", len(normal))
    assert transactional == [("notifications.tasks.deliver_many", normal)]
    assert wait_for_tasks(f"{prefix}bulk") == [("notifications.tasks.deliver_many", [low])]


def test_a_full_batch_goes_out_without_waiting_for_the_linger(settings, prefix):
    settings.DELIVERY_ENQUEUE_LINGER_MS = 60_000
    ids = [str(uuid.uuid4()) for _ in range(120)]
    enqueue.enqueue_many([(i, "urgent") for i in ids])

    published = wait_for_tasks(f"{prefix}realtime", len(ids))
    assert [batch for _task, batch in published] == [ids[:50], ids[50:100], ids[100:]]


def test_without_a_linger_each_call_publishes_at_once(settings, prefix):
    settings.DELIVERY_ENQUEUE_LINGER_MS = 0
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    enqueue.enqueue_many([(first, "normal")])
    enqueue.enqueue_many([(second, "normal")])

    published = tasks_in(f"{prefix}transactional")  # no waiting: already there
    assert [batch for _task, batch in published] == [[first], [second]]
