"""Compliance at volume: audit writers, the chain, verification, and an erasure, each beside a
reference measured in the same run.

    .venv/bin/python bench/compliance.py [--writers 20] [--entries 200] [--notifications 5000]
        [--messages 2000]

Creates a scratch database (``bench_compliance``: created, migrated and dropped here, on the
server of DATABASE_URL or the embedded one).

Part 1, audit writers: ``--writers`` threads, each with its own connection, each committing
``--entries`` transactions of one ``audit_record`` (the service's writer: the entry's indexes,
the append-only trigger) — beside the same threads inserting the same rows into a plain copy of
the table (no index, no trigger), the floor of a row per transaction. Then one ``audit_chain``
run over everything written (entries sealed a second) and ``audit_verify`` (entries checked a
second).

Part 2, erasure: one person with ``--notifications`` notifications (a delivery and an analytics
event each) and ``--messages`` chat messages, erased through ``erasure.erase`` (every registry
entry, batches of a thousand rows, each its own transaction) — beside the floor: the same
person seeded again and erased by one UPDATE or DELETE per table in a single transaction
(what an eraser that holds its locks to the end would do). Asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

SCRATCH = "bench_compliance"


def _threads(count: int, work) -> float:
    barrier = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:  # a failed writer must fail the figure, not vanish
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def part_audit(writers: int, entries: int) -> None:
    from communication.audit import audit_chain, audit_record, audit_verify

    total = writers * entries
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE bench_plain_audit (LIKE communication_auditentry INCLUDING DEFAULTS)"
        )

    def plain(i: int) -> None:
        for n in range(entries):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO bench_plain_audit (id, at, actor, action, object_type, "
                    "object_id, changes, ip, request_id) VALUES (%s, now(), %s, %s, %s, %s, "
                    "%s, NULL, '')",
                    [
                        i * entries + n,
                        f"service:bench-{i}",
                        "bench.write",
                        "bench.thing",
                        str(n),
                        '{"field": [1, 2]}',
                    ],
                )

    def audited(i: int) -> None:
        for n in range(entries):
            with transaction.atomic():
                audit_record(
                    "bench.write",
                    "bench.thing",
                    n,
                    changes={"field": [1, 2]},
                    actor=f"service:bench-{i}",
                )

    floor = _threads(writers, plain)
    spent = _threads(writers, audited)
    print(f"\naudit writers: {writers} threads x {entries} transactions ({total:,} entries)")
    print(f"  plain table (no index, no trigger)  {total / floor:10,.0f} entries/s")
    print(
        f"  audit_record                        {total / spent:10,.0f} entries/s "
        f"({spent / floor:.2f}x the floor's time)"
    )
    started = time.perf_counter()
    sealed = 0
    while True:
        done = audit_chain()
        sealed += done
        if not done:
            break
    chain = time.perf_counter() - started
    started = time.perf_counter()
    result = audit_verify()
    verify = time.perf_counter() - started
    print(f"  audit_chain  {sealed:,} sealed in {chain:.1f} s ({sealed / chain:,.0f}/s)")
    print(
        f"  audit_verify {result.checked:,} checked in {verify:.1f} s "
        f"({result.checked / verify:,.0f}/s), ok={result.ok}"
    )


def _seed_person(tag: str, notifications: int, messages: int):
    """One person with ``notifications`` notifications (a delivery and an event each) and
    ``messages`` messages, written set-based; returns the user."""
    from communication.models import User
    from messaging.models import Message

    user = User.objects.create(
        username=f"bench-{tag}",
        external_id=f"bench-{tag}",
        email=f"{tag}@bench.example.com",
        name=f"Bench {tag}",
        phone="+33612345678",
    )
    other = User.objects.create(username=f"other-{tag}", external_id=f"other-{tag}")
    from communication.compliance.keyed import lookup_hash
    from notifications.models import Delivery, Notification, NotificationRequest

    def sealed(model, name, value):
        # The encrypted columns take their fields' conversion; one ciphertext serves every row.
        return model._meta.get_field(name).encrypted(value)

    with connection.cursor() as cursor:
        request = uuid.uuid4()
        empty = sealed(NotificationRequest, "content", {})
        cursor.execute(
            "INSERT INTO notifications_notificationrequest (id, caller, idempotency_key, "
            "category_id, template_key, content, data, locale, priority, channels, "
            "scheduled_local, local_timezone, bulk, accepted, rejected, created_at) VALUES "
            "(%s, 'bench', '', 'alerts', '', %s, %s, '', 'normal', '[\"email\"]', false, "
            "'', true, %s, '[]', now())",
            [request, empty, empty, notifications],
        )
        cursor.execute(
            "INSERT INTO notifications_notification (id, request_id, user_id, recipient, email, "
            "email_hash, phone, phone_hash, category_id, locale, title, body, action_url, data, "
            "created_at) "
            "SELECT gen_random_uuid(), %s, %s, %s, %s, %s, %s, '', 'alerts', '', %s, %s, '', "
            "%s, now() FROM generate_series(1, %s) g",
            [
                request,
                user.pk,
                sealed(Notification, "recipient", {"user_id": user.external_id}),
                sealed(Notification, "email", user.email),
                lookup_hash(user.email),
                sealed(Notification, "phone", ""),
                sealed(Notification, "title", "Hello"),
                sealed(Notification, "body", "Body about it"),
                sealed(Notification, "data", {}),
                notifications,
            ],
        )
        # The address copies the notification's encrypted email (same keys) and its hash.
        cursor.execute(
            "INSERT INTO notifications_delivery (id, notification_id, channel, address, "
            "address_hash, status, reason, priority, attempts, provider_attempts, "
            "provider_index, provider, provider_message_id, error, variant, device_results, "
            "created_at, updated_at) "
            "SELECT gen_random_uuid(), id, 'email', email, email_hash, 'delivered', '', "
            "'normal', 1, 1, 0, 'outbox', '', '', '', %s, now(), now() "
            "FROM notifications_notification WHERE user_id = %s",
            [sealed(Delivery, "device_results", {}), user.pk],
        )
        cursor.execute(
            "INSERT INTO analytics_event (type, occurred_at, channel, provider, category, caller, "
            "notification_id, delivery_id, data, user_id, template, variant, machine) "
            "SELECT 'delivered', now(), 'email', 'outbox', 'alerts', 'bench', d.notification_id, "
            "d.id, '{\"url\": \"https://example.com\"}', %s, '', '', false "
            "FROM notifications_delivery d JOIN notifications_notification n "
            "ON n.id = d.notification_id WHERE n.user_id = %s",
            [user.pk, user.pk],
        )
        conversation = uuid.uuid4()
        cursor.execute(
            "INSERT INTO messaging_conversation (id, type, title, metadata, archived, created_at, "
            "updated_at, last_activity_at) VALUES (%s, 'group', '', '{}', false, now(), now(), "
            "now())",
            [conversation],
        )
        # The encrypted columns take the fields' own conversion (communication.fields).
        fields = {name: Message._meta.get_field(name) for name in ("content", "html", "metadata")}
        cursor.execute(
            "INSERT INTO messaging_message (conversation_id, sender_id, type, content, html, "
            "metadata, client_id, sent_at) SELECT %s, %s, 'text', c, h, m, '', now() "
            "FROM unnest(%s::bytea[], %s::bytea[], %s::bytea[]) AS t (c, h, m)",
            [
                conversation,
                user.pk,
                [fields["content"].encrypted(f"words {g}") for g in range(1, messages + 1)],
                [fields["html"].encrypted(f"<p>words {g}</p>") for g in range(1, messages + 1)],
                [fields["metadata"].encrypted({})] * messages,
            ],
        )
    return user, other


def _floor_erase(user) -> None:
    """One statement per table, one transaction: the reference an eraser holding every lock to
    the end would be."""
    from messaging.models import Message
    from notifications.models import Notification

    # The encrypted columns' blanks through their fields' conversion (one ciphertext each).
    blank = Notification._meta.get_field("email").encrypted("")
    empty = Notification._meta.get_field("data").encrypted({})
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE analytics_event SET data = '{}' WHERE user_id = %s", [user.pk])
        cursor.execute(
            "UPDATE notifications_delivery d SET address = %s, address_hash = '', error = '', "
            "device_results = %s FROM notifications_notification n "
            "WHERE n.id = d.notification_id AND n.user_id = %s",
            [blank, empty, user.pk],
        )
        cursor.execute(
            "UPDATE notifications_notification SET recipient = %s, email = %s, email_hash = '', "
            "title = %s, body = %s, data = %s WHERE user_id = %s",
            [empty, blank, blank, blank, empty, user.pk],
        )
        fields = {name: Message._meta.get_field(name) for name in ("content", "html", "metadata")}
        cursor.execute(
            "UPDATE messaging_message SET content = %s, html = %s, metadata = %s, "
            "deleted_at = now() WHERE sender_id = %s",
            [
                fields["content"].encrypted(""),
                fields["html"].encrypted(""),
                fields["metadata"].encrypted({}),
                user.pk,
            ],
        )
        cursor.execute(
            "UPDATE communication_user SET external_id = NULL, email = '', name = '', phone = '' "
            "WHERE id = %s",
            [user.pk],
        )


def part_erasure(notifications: int, messages: int) -> None:
    from communication.compliance import erasure

    rows = notifications * 3 + messages
    print(
        f"\nerasure: one person, {notifications:,} notifications (+ a delivery and an event "
        f"each), {messages:,} messages ({rows:,} rows)"
    )
    floor_user, _ = _seed_person("floor", notifications, messages)
    started = time.perf_counter()
    _floor_erase(floor_user)
    floor = time.perf_counter() - started
    user, _ = _seed_person("person", notifications, messages)
    started = time.perf_counter()
    request = erasure.erase("user_id", user.external_id, requested_by="bench")
    spent = time.perf_counter() - started
    erased = sum(request.erased.values())
    print(
        f"  one statement per table, one transaction  {floor:6.2f} s ({rows / floor:,.0f} rows/s)"
    )
    print(
        f"  erasure.erase (batches of 1,000)          {spent:6.2f} s ({rows / spent:,.0f} rows/s, "
        f"{erased:,} rows erased or anonymised, {spent / floor:.2f}x the floor's time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--entries", type=int, default=200, help="transactions per writer")
    parser.add_argument("--notifications", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()

    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = SCRATCH
    settings.CACHES["default"]["KEY_PREFIX"] = "bench-compliance"
    logging.getLogger("communication").setLevel(logging.ERROR)
    print(f"machine: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"scratch database {SCRATCH!r}: migrating")
    config = setup_databases(verbosity=0, interactive=False)
    try:
        part_audit(args.writers, args.entries)
        part_erasure(args.notifications, args.messages)
    finally:
        connections.close_all()
        teardown_databases(config, verbosity=0)


if __name__ == "__main__":
    main()
