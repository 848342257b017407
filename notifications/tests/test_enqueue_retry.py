"""A publish the broker refuses is kept and published once the broker is back, by the process's
own publisher: no caller sees the error, nothing waits for the sweep. The broker is the real Redis
behind ``harness.FaultProxy`` (down: every connection cut, new ones refused)."""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from kombu import Exchange, Queue

from communication.celery import app
from conftest import wait_for
from notifications import enqueue
from notifications.tests.test_enqueue import tasks_in
from tests.faults.harness import FaultProxy


@pytest.fixture
def broker(settings, monkeypatch):
    """This process's broker behind a fault proxy, on queues nothing consumes."""
    settings.CELERY_QUEUE_PREFIX = f"enr{uuid.uuid4().hex[:8]}-"
    real = urlsplit(django_settings.CELERY_BROKER_URL)
    if real.scheme.endswith("+socket"):  # the embedded Redis: a unix socket (redis+socket://…)
        proxy = FaultProxy(real.path)
        through = f"redis://127.0.0.1:{proxy.port}/0"
    else:
        proxy = FaultProxy((real.hostname or "127.0.0.1", real.port or 6379))
        through = real._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    before = app.conf.broker_url
    app.conf.broker_url = through
    # Celery reads the environment's CELERY_BROKER_URL before its configuration (the embedded
    # servers set it).
    monkeypatch.setenv("CELERY_BROKER_URL", through)
    app._after_fork()  # Celery's own reset of its connection pools
    try:
        yield proxy
    finally:
        app.conf.broker_url = before
        app._after_fork()
        proxy.close()


def kept() -> list[str]:
    """The ids this process keeps to publish again."""
    with enqueue._buffer.lock:
        return [i for _name, ids, _due in enqueue._buffer.retrying for i in ids]


def published(name: str, ids: int) -> list[str]:
    found: list[str] = []
    wait_for(
        lambda: (
            found.extend(i for _task, batch in tasks_in(name) for i in batch) or len(found) >= ids
        ),
        15,
        what=f"{ids} ids on {name}",
    )
    return found


def test_what_the_broker_refused_goes_out_when_it_is_back(settings, broker):
    settings.DELIVERY_ENQUEUE_LINGER_MS = 50
    prefix = settings.CELERY_QUEUE_PREFIX
    broker.down()
    buffered = [str(uuid.uuid4()) for _ in range(3)]
    enqueue.enqueue_many([(i, "normal") for i in buffered])  # the publisher thread's
    settings.DELIVERY_ENQUEUE_LINGER_MS = 0
    at_once = str(uuid.uuid4())
    enqueue.enqueue_many([(at_once, "urgent")])  # the caller's thread: no error raised
    wait_for(lambda: len(kept()) == 4, 10, what="both refused")

    broker.up()
    assert sorted(published(f"{prefix}transactional", 3)) == sorted(buffered)
    assert published(f"{prefix}realtime", 1) == [at_once]


def test_a_delayed_publish_the_broker_refused_keeps_its_delay(settings, broker):
    prefix = settings.CELERY_QUEUE_PREFIX
    broker.down()
    later = str(uuid.uuid4())
    enqueue.enqueue_many([(later, "low")], countdown=60)
    assert kept() == [later]
    broker.up()
    wait_for(lambda: not enqueue._buffer.retrying, 15, what="the retry")

    name = f"{prefix}bulk"
    with app.connection_for_read() as connection:
        simple = connection.SimpleQueue(Queue(name, Exchange(name), routing_key=name))
        try:
            message = simple.get(timeout=5)
            message.ack()
        finally:
            simple.close()
    assert message.decode()[0] == [[later]]
    eta = dt.datetime.fromisoformat(message.headers["eta"])
    assert 50 < (eta - timezone.now()).total_seconds() <= 60
