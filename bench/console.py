"""Server time of the staff console's home dashboard over a million deliveries and their events.

    .venv/bin/python bench/console.py [--deliveries 1000000] [--peer 10000] [--days 30]
        [--loads 20] [--rounds 4]

Seeds two scratch databases (``bench_console`` and ``bench_console_peer``: created, migrated and
dropped here, on the server of DATABASE_URL or the embedded one) with set-based SQL
(``INSERT … SELECT generate_series``): requests, notifications, deliveries in every channel and
status spread over ``--days`` days, each delivery's events (queued, the provider call with its
latency, a retry before some failures, delivered), a backlog of queued deliveries, sends
scheduled over the next hours, versions awaiting approval; then VACUUM ANALYZE (what autovacuum
does to a table at rest). One holds ``--deliveries`` deliveries, the other ``--peer`` (the same
days and mix, thinner: the reference).

Then loads ``/admin/`` through Django's test Client as a staff user, ``--loads`` times on each,
taking turns over ``--rounds`` rounds so that whatever else the machine runs weighs on both, and
once more on the big one without the console's indexes (``CONSOLE_INDEXES``): what they buy.
Prints the median and p95 server time, this process's CPU per load, the statements of one load
(the slowest with their time) and how busy the whole machine was meanwhile. Asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()

from _proc import machine_busy  # noqa: E402  (bench/_proc.py)
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import (  # noqa: E402
    CaptureQueriesContext,
    setup_databases,
    teardown_databases,
)

SCRATCH = "bench_console"
# notifications/0006_console_indexes and analytics/0002_console_indexes.
CONSOLE_INDEXES = (
    "delivery_created",
    "event_provider_calls",
    "event_provider_errors",
    "event_failures",
)
PEER = "bench_console_peer"

# One statement per table, every row computed from its number ``g``. Ids are derived from the
# row number so that the next table can point at them without a lookup. Deliveries go two per
# notification (email, then push, SMS or in-app), five notifications per request; ``g = 1`` is
# the newest. Status mix per thousand: 700 delivered, 200 sent, 40 failed, 20 suppressed, 15
# skipped, 10 cancelled, 10 ambiguous, 5 sent; the newest are queued, a band is scheduled ahead.
UUID = "('{}0000000-0000-4000-8000-' || lpad(to_hex({}), 12, '0'))::uuid"
SEED = {
    "requests": f"""
        INSERT INTO notifications_notificationrequest (id, caller, idempotency_key, category_id,
            template_key, content, data, locale, priority, channels, scheduled_local,
            local_timezone, bulk, accepted, rejected, created_at)
        SELECT {UUID.format(1, "g")}, 'bench', '', 'alerts', 'welcome-email', %(empty)s,
            %(empty)s, '', 'normal', '["email", "push"]', false, '', false, 5, '[]',
            %(now)s - (g * 10.0 / %(n)s) * %(span)s
        FROM generate_series(%(first_request)s::bigint, %(last_request)s::bigint) AS g
    """,  # noqa: S608 - numbers and fixed names only
    "notifications": f"""
        INSERT INTO notifications_notification (id, request_id, recipient, email, email_hash,
            phone, phone_hash, category_id, locale, title, body, action_url, data, created_at)
        SELECT {UUID.format(2, "g")}, {UUID.format(1, "(g + 4) / 5")},
            %(recipient)s, %(address)s, md5('u' || g) || md5(g::text), %(blank)s, '', 'alerts',
            'en', %(title)s, %(body)s, '', %(empty)s,
            %(now)s - (g * 2.0 / %(n)s) * %(span)s
        FROM generate_series(%(first_notification)s::bigint, %(last_notification)s::bigint) AS g
    """,  # noqa: S608 - numbers and fixed names only
    "deliveries": f"""
        INSERT INTO notifications_delivery (id, notification_id, channel, address, address_hash,
            status, reason,
            priority, attempts, provider_attempts, provider_index, provider, provider_message_id,
            error, variant, device_results, scheduled_for, created_at, updated_at, queued_at)
        SELECT {UUID.format(3, "g")}, {UUID.format(2, "(g + 1) / 2")}, c.channel,
            %(address)s, md5('u' || g) || md5(g::text), s.status,
            CASE s.status WHEN 'suppressed' THEN 'hard_bounce' WHEN 'skipped' THEN 'preference'
                ELSE '' END,
            'normal', 1, 0, 0,
            CASE WHEN s.status IN ('queued', 'scheduled', 'suppressed', 'skipped', 'cancelled')
                THEN ''
                WHEN c.channel = 'email' THEN CASE WHEN g %% 10 = 0 THEN 'mailgun' ELSE 'sendgrid' END
                WHEN c.channel = 'sms' THEN CASE WHEN g %% 4 = 0 THEN 'ovh' ELSE 'twilio' END
                WHEN c.channel = 'push' THEN CASE WHEN g %% 3 = 0 THEN 'webpush' ELSE 'fcm' END
                ELSE '' END,
            '', '', '', %(empty)s,
            CASE WHEN s.status = 'scheduled' THEN %(now)s + (g %% 360) * interval '1 minute' END,
            t.at, t.at, t.at
        FROM generate_series(%(first_delivery)s::bigint, %(last_delivery)s::bigint) AS g,
        LATERAL (SELECT %(now)s - (g * 1.0 / %(n)s) * %(span)s AS at) AS t,
        LATERAL (SELECT CASE WHEN g %% 2 = 1 THEN 'email'
            WHEN ((g + 1) / 2) %% 10 < 4 THEN 'push'
            WHEN ((g + 1) / 2) %% 10 < 7 THEN 'sms' ELSE 'in_app' END AS channel) AS c,
        LATERAL (SELECT CASE
            WHEN g <= %(queued)s THEN 'queued'
            WHEN g <= %(queued)s + %(scheduled)s THEN 'scheduled'
            WHEN c.channel = 'in_app' THEN 'delivered'
            ELSE (ARRAY['delivered', 'sent', 'failed', 'suppressed', 'skipped', 'cancelled',
                        'ambiguous', 'sent'])[
                1 + (CASE WHEN (g * 7919) %% 1000 < 700 THEN 0
                     WHEN (g * 7919) %% 1000 < 900 THEN 1
                     WHEN (g * 7919) %% 1000 < 940 THEN 2
                     WHEN (g * 7919) %% 1000 < 960 THEN 3
                     WHEN (g * 7919) %% 1000 < 975 THEN 4
                     WHEN (g * 7919) %% 1000 < 985 THEN 5
                     WHEN (g * 7919) %% 1000 < 995 THEN 6 ELSE 7 END)]
            END AS status) AS s
    """,  # noqa: S608 - numbers and fixed names only
    # Every delivery's events from its row: queued; the provider call (sent, failed or
    # ambiguous, with its latency); a retry before one failure in two; delivered.
    "events": """
        INSERT INTO analytics_event (type, occurred_at, channel, provider, category, caller,
            notification_id, delivery_id, latency_ms, data)
        SELECT e.type, d.created_at + e.after, d.channel, e.provider, 'alerts', 'bench',
            d.notification_id, d.id, e.latency, e.data
        FROM notifications_delivery AS d
        CROSS JOIN LATERAL (VALUES
            ('queued', interval '0', '', NULL::float8, '{}'::jsonb, d.channel <> 'in_app'),
            ('retry', interval '1 second', d.provider, 900.0 + (hashtext(d.id::text) & 511),
                '{"error": "503 Service Unavailable"}'::jsonb,
                d.status = 'failed' AND hashtext(d.id::text) & 1 = 0),
            (CASE d.status WHEN 'failed' THEN 'failed' WHEN 'ambiguous' THEN 'ambiguous'
                ELSE 'sent' END,
                interval '2 seconds', d.provider, 40.0 + (hashtext(d.id::text) & 255),
                CASE d.status WHEN 'failed' THEN jsonb_build_object('reason',
                    (ARRAY['rejected', 'invalid', 'providers_exhausted'])[
                        1 + (hashtext(d.id::text) & 65535) %% 3])
                WHEN 'ambiguous' THEN '{"error": "timed out after the request was sent"}'
                ELSE '{}' END,
                d.status IN ('sent', 'delivered', 'failed', 'ambiguous')
                    AND d.channel <> 'in_app'),
            ('delivered', interval '5 seconds', d.provider, NULL, '{}'::jsonb,
                d.status = 'delivered')
        ) AS e(type, after, provider, latency, data, wanted)
        WHERE e.wanted AND d.id >= %(low_id)s AND d.id <= %(high_id)s
    """,
}


def seed(start: int, stop: int, total: int, days: int) -> None:
    """Deliveries ``start``..``stop`` of ``total`` (the numbering fixes each one's time and
    kind, so seeding in two steps makes the same rows as one), with their notifications,
    requests and events."""
    from django.utils import timezone

    from notifications.models import Notification

    def sealed(name: str, value) -> bytes:
        return Notification._meta.get_field(name).encrypted(value)

    params = {
        # The encrypted columns through their fields' conversion: one ciphertext serves every
        # row (what the console reads costs the same); the keyed hashes differ per row.
        "empty": sealed("data", {}),
        "blank": sealed("phone", ""),
        "recipient": sealed("recipient", {"email": "someone@example.com"}),
        "address": sealed("email", "someone@example.com"),
        "title": sealed("title", "Your receipt"),
        "body": sealed("body", "Thank you."),
        "now": timezone.now(),
        "n": total,
        "span": dt.timedelta(days=days),
        "queued": 300,
        "scheduled": 2000,
        "first_delivery": start,
        "last_delivery": stop,
        "first_notification": (start + 1) // 2,
        "last_notification": (stop + 1) // 2,
        "first_request": ((start + 1) // 2 + 4) // 5,
        "last_request": ((stop + 1) // 2 + 4) // 5,
    }
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        for table in ("requests", "notifications", "deliveries"):
            started = time.perf_counter()
            cursor.execute(SEED[table], params)
            print(
                f"  {table:14} {cursor.rowcount:>10,} rows  {time.perf_counter() - started:6.1f} s"
            )
        started = time.perf_counter()
        cursor.execute(
            SEED["events"],
            {
                "low_id": f"30000000-0000-4000-8000-{start:012x}",
                "high_id": f"30000000-0000-4000-8000-{stop:012x}",
            },
        )
        print(
            f"  {'events':14} {cursor.rowcount:>10,} rows  {time.perf_counter() - started:6.1f} s"
        )


def waiting_versions(count: int) -> None:
    from templates_app.models import Template, TemplateVersion, VersionStatus

    template = Template.objects.get(key="welcome-email")
    live = template.versions.get(is_live=True, language="en")
    start = template.versions.order_by("-number").first().number
    TemplateVersion.objects.bulk_create(
        TemplateVersion(
            template=template,
            language="en",
            number=start + i + 1,
            status=VersionStatus.PENDING,
            subject=live.subject,
            html=live.html,
            text=live.text,
            created_by="staff:bench",
            submitted_by="staff:bench",
        )
        for i in range(count)
    )


def vacuum() -> None:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in ("notifications_delivery", "analytics_event", "notifications_notification"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    print(f"  vacuum analyze {time.perf_counter() - started:6.1f} s")


class Side:
    """One database the dashboard is measured on, with a staff member logged in to it."""

    def __init__(self, label: str, database: str, client: Client | None = None):
        self.label, self.database = label, database
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.busy = [0.0, 0.0]
        self.statements: list[tuple[float, str]] = []
        if client is None:
            from communication.models import User

            use(database)
            client = Client()
            client.force_login(User.objects.create_superuser("bench", "b@example.com", "bench"))
        self.client = client

    def measure(self, loads: int) -> None:
        """``loads`` timed loads, after one outside the clock (the connection, the caches)."""
        use(self.database)
        assert self.client.get("/admin/").status_code == 200
        busy, total = machine_busy()
        for _ in range(loads):
            started, cpu = time.perf_counter(), time.process_time()
            response = self.client.get("/admin/")
            self.times.append((time.perf_counter() - started) * 1000)
            self.cpu.append((time.process_time() - cpu) * 1000)
            assert response.status_code == 200
        after_busy, after_total = machine_busy()
        self.busy[0] += after_busy - busy
        self.busy[1] += after_total - total

    def explain(self) -> None:
        """The statements of one more load, slowest first."""
        use(self.database)
        with CaptureQueriesContext(connection) as queries:
            self.client.get("/admin/")
        self.statements = sorted(
            (
                (float(q["time"]) * 1000, " ".join(q["sql"].split()))
                for q in queries.captured_queries
            ),
            reverse=True,
        )

    def report(self) -> None:
        print(
            f"{self.label:32}{statistics.median(self.times):10.1f}{percentile(self.times, 95):9.1f}"
            f"{statistics.median(self.cpu):11.1f}{len(self.statements):9}"
            f"{sum(ms for ms, _ in self.statements):9.0f}{100 * self.busy[0] / self.busy[1]:8.0f} %"
        )

    def slowest(self) -> None:
        print(f"{self.label}, the slowest statements of one load:")
        for ms, sql in self.statements[:4]:
            print(f"  {ms:7.1f} ms  {sql[:140]}")


def use(database: str) -> None:
    """Points the connection at ``database`` (the next query reconnects)."""
    if connection.settings_dict["NAME"] != database:
        connection.close()
        connection.settings_dict["NAME"] = database


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def counts() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM notifications_delivery), "
            "(SELECT count(*) FROM analytics_event)"
        )
        deliveries, events = cursor.fetchone()
    return f"{deliveries:,} deliveries, {events:,} events"


def nodb(sql: str) -> None:
    connection.close()
    with connection._nodb_cursor() as cursor:
        cursor.execute(sql)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--peer", type=int, default=10_000, help="deliveries of the reference")
    parser.add_argument("--days", type=int, default=30, help="days the deliveries span")
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two sides")
    args = parser.parse_args()

    # Django's test Client calls itself "testserver". (No setup_test_environment: its template
    # instrumentation would be measured too.)
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = SCRATCH
    # Nothing has used the cache yet: the bench's breakers get a key space of their own.
    settings.CACHES["default"]["KEY_PREFIX"] = "bench-console"
    print(f"scratch databases {SCRATCH!r} and {PEER!r}: migrating")
    config = setup_databases(verbosity=0, interactive=False)
    nodb(f"DROP DATABASE IF EXISTS {PEER}")
    nodb(f"CREATE DATABASE {PEER} TEMPLATE {SCRATCH}")
    try:
        total, peer = args.deliveries, min(args.peer, args.deliveries)
        sides = [Side(f"{peer:,} deliveries", PEER), Side(f"{total:,} deliveries", SCRATCH)]
        for side, n in zip(sides, (peer, total), strict=True):
            use(side.database)
            waiting_versions(12)
            print(f"{side.database}: seeding {n:,} deliveries over {args.days} days")
            seed(1, n, n, args.days)
            vacuum()
            print(f"  {counts()}")

        # Turn about, so that whatever else the machine runs weighs on both sides alike.
        per_round = max(1, args.loads // args.rounds)
        for _ in range(args.rounds):
            for side in sides:
                side.measure(per_round)
        for side in sides:
            side.explain()

        bare = Side("  without the console's indexes", SCRATCH, sides[1].client)
        with connection.cursor() as cursor:
            for index in CONSOLE_INDEXES:
                cursor.execute(f"DROP INDEX {index}")
        bare.measure(per_round * args.rounds)
        bare.explain()
    finally:
        connection.close()
        connection.settings_dict["NAME"] = SCRATCH
        teardown_databases(config, verbosity=0)
        nodb(f"DROP DATABASE IF EXISTS {PEER}")

    print(
        f"\n/admin/ ({per_round * args.rounds} loads each)"
        f"{'median ms':>11}{'p95 ms':>9}{'cpu ms':>11}{'queries':>9}{'sql ms':>9}{'busy':>10}"
    )
    for side in [*sides, bare]:
        side.report()
    print("(cpu: this process's CPU per load, median; sql: one load's statements; busy: the")
    print(" whole machine's CPU use meanwhile, this bench and the database included)\n")
    for side in [*sides, bare]:
        side.slowest()


if __name__ == "__main__":
    main()
