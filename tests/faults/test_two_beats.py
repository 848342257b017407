"""Fault scenario 5: two beat processes for several schedule slots, every periodic job sent once
per slot, while the leader's lock session is cut from the server and then the leader is killed
with SIGKILL: a beat leads again within a bounded time, and no slot goes twice.

Two real ``celery beat`` processes (the command line ``serve`` runs) against the test database,
with our real schedules (``setup_schedules``) plus a probe sent every second, on queues of this
test's own prefix. No worker consumes them: the test pops every message beat publishes from the
broker, so it counts exactly what beat sent, per periodic task, with the time it arrived.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from communication.beat import APPLICATION_NAME, LOCK_ID, LOCK_SPACE
from communication.processes import beat_argv
from communication.schedules import SCHEDULES
from conftest import ROOT, process_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.slow]

PROBE = "beat-probe"
PROBE_EVERY = 1
# Three phases (both beats, after a cut session, the survivor), each of several probe slots.
PHASE_SECONDS = 8
TAKEOVER_BOUND = 10.0


class Published:
    """Pops every message published to the test's queues and notes (arrival time, periodic task
    name): what beat sent, counted at the broker."""

    def __init__(self, queues: list[str]):
        self.queues = queues
        # The embedded Redis is kombu's redis+socket://path, which redis-py spells unix://path.
        url = settings.CELERY_BROKER_URL.replace("redis+socket://", "unix://", 1)
        self.client = redis.Redis.from_url(url)
        self.client.delete(*queues)
        self.sent: dict[str, list[float]] = defaultdict(list)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            popped = self.client.brpop(self.queues, timeout=0.2)
            if popped:
                headers = json.loads(popped[1])["headers"]
                self.sent[headers.get("periodic_task_name", "?")].append(time.monotonic())

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.client.delete(*self.queues)

    def between(self, start: float, end: float) -> dict[str, list[float]]:
        return {name: [t for t in times if start <= t < end] for name, times in self.sent.items()}


def every(name: str) -> float:
    return PROBE_EVERY if name == PROBE else SCHEDULES[name][1]


def twice_in_a_slot(sent: dict[str, list[float]]) -> dict[str, int]:
    """Per task, the sends that came less than half an interval after the previous one."""
    out = {}
    for name, times in sent.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        out[name] = sum(1 for gap in gaps if gap < every(name) / 2)
    return out


def lock_holder() -> int | None:
    """The process id of the beat holding the lock, from its session's application_name."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::bigint::oid"
            " AND l.objid = %s::bigint::oid AND l.objsubid = 2"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [LOCK_SPACE, LOCK_ID],
        )
        row = cursor.fetchone()
    if not row or not row[0].startswith(APPLICATION_NAME):
        return None
    return int(row[0].rsplit(" ", 1)[1])


def terminate_lock_session() -> None:
    """Ends the lock holder's PostgreSQL session from the server side."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND granted AND classid = %s::bigint::oid AND objid = %s::bigint::oid"
            " AND objsubid = 2"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [LOCK_SPACE, LOCK_ID],
        )


def beat_sessions() -> set[int]:
    """The process ids of the beats connected for the lock (holding it or trying)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE %s",
            [f"{APPLICATION_NAME} %"],
        )
        return {int(name.rsplit(" ", 1)[1]) for (name,) in cursor.fetchall()}


def start_beat(log: Path, prefix: str, *extra: str) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(
            [*beat_argv(), *extra],
            cwd=ROOT,
            env=process_env(CELERY_QUEUE_PREFIX=prefix),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def schedules(settings):
    """Our real periodic tasks and the one-second probe, on queues of the test's own prefix."""
    prefix = f"beat{uuid.uuid4().hex[:6]}-"
    settings.CELERY_QUEUE_PREFIX = prefix
    call_command("setup_schedules", verbosity=0)
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=PROBE_EVERY, period=IntervalSchedule.SECONDS
    )
    PeriodicTask.objects.create(
        name=PROBE,
        task="communication.tasks.heartbeat_roundtrip",
        interval=interval,
        queue=f"{prefix}default",
    )
    published = Published([f"{prefix}{name}" for name in settings.QUEUE_NAMES])
    yield prefix, published
    published.stop()


def test_two_beats_send_each_slot_once_and_the_survivor_takes_over(
    schedules, tmp_path, fault_report
):
    prefix, published = schedules
    beats = [start_beat(tmp_path / f"beat{i}.log", prefix) for i in (1, 2)]
    pids = {beat.pid: beat for beat in beats}
    try:
        wait_for(lambda: lock_holder() in pids, 60, what="a leader")
        # Both are up: the one that stands by has its session and polls for the lock.
        wait_for(lambda: beat_sessions() == set(pids), 30, what="both beats' sessions")
        wait_for(lambda: published.sent.get(PROBE), 30, what="the first probe")
        start = time.monotonic()
        time.sleep(PHASE_SECONDS)

        # The leader's session is cut (what a network partition or a PostgreSQL restart does):
        # it must stop sending, and a beat (either) lead again.
        cut_at = time.monotonic()
        first = lock_holder()
        terminate_lock_session()
        wait_for(lambda: lock_holder() in pids, TAKEOVER_BOUND, what="a leader after the cut")
        relead = time.monotonic() - cut_at
        second = lock_holder()
        time.sleep(PHASE_SECONDS)

        killed_at = time.monotonic()
        leader = pids[lock_holder()]
        (standby,) = [beat for beat in beats if beat is not leader]
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait(10)
        wait_for(lambda: lock_holder() == standby.pid, TAKEOVER_BOUND, what="the takeover")
        took_over = time.monotonic() - killed_at
        wait_for(
            lambda: any(t > killed_at for t in published.sent.get(PROBE, [])),
            TAKEOVER_BOUND,
            what="a probe from the survivor",
        )
        resumed = min(t for t in published.sent[PROBE] if t > killed_at) - killed_at
        time.sleep(PHASE_SECONDS)
        end = time.monotonic()
    finally:
        stop(*beats)

    phases = [
        published.between(start, cut_at),
        published.between(cut_at, killed_at),
        published.between(killed_at, end),
    ]
    whole = published.between(start, end)
    twice = twice_in_a_slot(whole)
    sent = {name: len(times) for name, times in sorted(whole.items())}
    fault_report(
        f"injected: 2 beat processes on one schedule ({len(sent)} jobs sent in the window, the "
        f"probe every {PROBE_EVERY} s); after {PHASE_SECONDS} s the leader's lock session "
        f"terminated (pg_terminate_backend); {PHASE_SECONDS} s later kill -9 of the leader; "
        f"{PHASE_SECONDS} s more with the survivor",
        f"counted at the broker: {sum(sent.values())} sends {sent}",
        f"sent twice in one slot: {sum(twice.values())}; after the cut a leader in {relead:.1f} s "
        f"({'the same beat' if second == first else 'the other beat'}); "
        f"after the kill the survivor took the lock in {took_over:.1f} s and sent its first "
        f"probe {resumed:.1f} s after the kill",
    )
    assert sum(twice.values()) == 0, twice
    assert took_over < TAKEOVER_BOUND
    # Each phase had its slots sent, the probe about once a second; over the whole window the
    # 5-second jobs (deliveries, webhooks, campaigns) too, whoever led.
    for phase in phases:
        assert len(phase.get(PROBE, [])) >= PHASE_SECONDS - 3 - resumed, phase.get(PROBE)
    window = end - start
    for name, (_, seconds, _) in SCHEDULES.items():
        if seconds <= 5:
            assert len(whole.get(name, [])) >= window // seconds - 3, (name, whole.get(name))


def test_two_beats_without_the_lock_send_slots_twice(schedules, tmp_path, fault_report):
    """The control: django-celery-beat's own DatabaseScheduler, twice, sends the probe's slots
    twice. It shows the count above would see duplicates if the lock did not prevent them."""
    prefix, published = schedules
    plain = ("-S", "django_celery_beat.schedulers:DatabaseScheduler")
    beats = [start_beat(tmp_path / f"plain{i}.log", prefix, *plain) for i in (1, 2)]
    try:
        # Both read the schedule and send: the probe comes more often than once a second.
        wait_for(lambda: twice_in_a_slot(published.sent).get(PROBE, 0) >= 3, 60, what="duplicates")
    finally:
        stop(*beats)
    twice = twice_in_a_slot(published.sent)
    fault_report(
        "injected: 2 beat processes with django-celery-beat's DatabaseScheduler (no lock)",
        f"counted at the broker: probe sent {len(published.sent[PROBE])} times, "
        f"{twice[PROBE]} of them twice in one slot",
    )
    assert twice[PROBE] >= 3
