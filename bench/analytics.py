"""Analytics at volume: the rollups over a million events, then the delivery endpoint and the
dashboard page over thirty days of rollups.

    .venv/bin/python bench/analytics.py [--events 1000000] [--days 30] [--late 10000]
        [--requests 200]

Creates a scratch database (``bench_analytics``: created, migrated and dropped here, on the
server of DATABASE_URL or the embedded one), makes the monthly partitions the range needs and
seeds ``--events`` events over ``--days`` days with one set-based ``INSERT … SELECT
generate_series`` statement: deliveries in every channel (two providers each), three
categories, eight templates (two of them A/B tested), a third of them from twenty campaigns of
three steps (a campaign sends one template); for each delivery its events: queued, a retry before some failures, the provider
call (sent or failed, with its latency, queue wait, API-to-provider time and cost), delivered,
bounced or complained, human and machine opens over the next two days, clicks, a few
unsubscribes. Then VACUUM ANALYZE (what autovacuum does to a table at rest).

Part 1 times the first rollup run (every event new: all hours and days built), beside the
floor, one read of the same events grouped by hour and dimensions that writes nothing; then
``--late`` more events (four in five in the last hour, the rest late opens, clicks and bounces
of the last three days' deliveries) and the incremental run that takes them, beside a run that
finds nothing new.

Part 2 loads ``GET /api/v1/analytics/delivery`` (thirty days, by day, by channel and provider)
``--requests`` times through Django's test Client with an ``analytics:read`` service token, and
``/health/live`` as many times as the reference (the request stack alone): p50/p95/p99. Part 3
loads the staff dashboard ``/admin/analytics/dashboard/`` as a staff member. A part whose page
answers 404 (not built yet) prints "skipped: endpoint missing". Asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
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
from django.test.utils import setup_databases, teardown_databases  # noqa: E402
from django.utils import timezone  # noqa: E402

SCRATCH = "bench_analytics"
EVENTS_PER_DELIVERY = 3.3  # about, with the mix below: enough deliveries to reach --events

UUID = "('{}0000000-0000-4000-8000-' || lpad(to_hex({}), 12, '0'))::uuid"
# Delivery ``k`` (1 = the newest) happened at ``now - k / n * span``; every property comes from
# a hash of ``k`` so that two seeds make the same rows. ``h`` is that hash in [0, 1000).
SEED = f"""
INSERT INTO analytics_event (type, occurred_at, channel, provider, category, caller,
    notification_id, delivery_id, latency_ms, cost, data, template, variant, campaign_id,
    step_id, machine, queue_wait_ms, api_to_provider_ms)
SELECT e.type, least(%(now)s, d.at + e.after), d.channel,
    CASE WHEN e.type = 'queued' THEN '' ELSE d.provider END, d.category, 'bench',
    {UUID.format(2, "d.k")}, {UUID.format(3, "d.k")}, e.latency, e.cost, '{{}}', d.template,
    d.variant, d.campaign_id, d.step_id, e.machine, e.queue_wait, e.api_to_provider
FROM (
    SELECT k, h, c.channel, at,
        CASE c.channel WHEN 'email' THEN (ARRAY['sendgrid', 'mailgun'])[1 + k %% 2]
            WHEN 'sms' THEN (ARRAY['twilio', 'ovh'])[1 + k %% 2]
            WHEN 'push' THEN (ARRAY['fcm', 'webpush'])[1 + k %% 2]
            ELSE 'in_app' END AS provider,
        CASE WHEN h %% 3 = 0 THEN 'marketing'
            ELSE (ARRAY['alerts', 'security'])[1 + (h / 7) %% 2] END AS category,
        'template-' || CASE WHEN h %% 3 = 0 THEN (h / 11) %% 8 ELSE h %% 8 END AS template,
        CASE WHEN h %% 8 < 2 THEN (ARRAY['a', 'b'])[1 + (h / 3) %% 2] ELSE '' END AS variant,
        CASE WHEN h %% 3 = 0 THEN {UUID.format(4, "1 + (h / 11) %% 20")} END AS campaign_id,
        CASE WHEN h %% 3 = 0 THEN {UUID.format(5, "(1 + (h / 11) %% 20) * 10 + (h / 5) %% 3")}
            END AS step_id
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS k,
    LATERAL (SELECT (k * 7919 + k / 13 * 104729) %% 1000 AS h,
        %(now)s - (k * 1.0 / %(n)s) * %(span)s AS at) AS x,
    LATERAL (SELECT CASE WHEN h %% 20 < 12 THEN 'email' WHEN h %% 20 < 16 THEN 'sms'
        WHEN h %% 20 < 19 THEN 'push' ELSE 'in_app' END AS channel) AS c
) AS d
CROSS JOIN LATERAL (VALUES
    ('queued', interval '0', NULL::float8, NULL::numeric, false, NULL::float8, NULL::float8,
        true),
    ('retry', interval '1 second', 900.0 + d.h, NULL, false, NULL, NULL, d.h < 15),
    (CASE WHEN d.h < 30 THEN 'failed' ELSE 'sent' END, interval '2 seconds',
        CASE WHEN d.channel = 'in_app' THEN NULL ELSE 20.0 + (d.h * 37) %% 1500 END,
        CASE WHEN d.h >= 30 AND d.channel = 'sms' THEN 0.05
            WHEN d.h >= 30 AND d.channel = 'email' THEN 0.0004 END,
        false, 2.0 + (d.h * 13) %% 400, 30.0 + (d.h * 29) %% 3000, true),
    ('delivered', interval '5 seconds', NULL, NULL, false, NULL, NULL, d.h >= 60),
    ('bounced', interval '3 minutes', NULL, NULL, false, NULL, NULL,
        d.h >= 30 AND d.h < 60 AND d.channel = 'email'),
    ('complained', interval '6 hours', NULL, NULL, false, NULL, NULL,
        d.h >= 60 AND d.h < 62 AND d.channel = 'email'),
    ('opened', interval '30 seconds', NULL, NULL, true, NULL, NULL,
        d.h >= 60 AND d.h < 200 AND d.channel = 'email'),
    ('opened', (d.h * 173 %% 2880) * interval '1 minute', NULL, NULL, false, NULL, NULL,
        d.h >= 100 AND d.h < 450 AND d.channel IN ('email', 'push')),
    ('opened', (d.h * 173 %% 2880 + 600) * interval '1 minute', NULL, NULL, false, NULL, NULL,
        d.h >= 100 AND d.h < 250 AND d.channel = 'email'),
    ('clicked', (d.h * 173 %% 2880 + 2) * interval '1 minute', NULL, NULL, false, NULL, NULL,
        d.h >= 100 AND d.h < 180),
    ('clicked', interval '40 seconds', NULL, NULL, true, NULL, NULL,
        d.h >= 180 AND d.h < 220 AND d.channel = 'email'),
    ('unsubscribed', (d.h * 173 %% 2880 + 5) * interval '1 minute', NULL, NULL, false, NULL,
        NULL, d.h >= 100 AND d.h < 106)
) AS e(type, after, latency, cost, machine, queue_wait, api_to_provider, wanted)
WHERE e.wanted
LIMIT %(limit)s
"""  # noqa: S608 (numbers and fixed names only)

# Late events for the incremental run: opens, clicks and bounces of deliveries of the last
# three days, written now with the time they happened.
LATE = f"""
INSERT INTO analytics_event (type, occurred_at, channel, provider, category, caller,
    delivery_id, data, template, variant, machine)
SELECT (ARRAY['opened', 'opened', 'clicked', 'bounced'])[1 + g %% 4],
    %(now)s - (g %% 4320) * interval '1 minute', 'email', 'sendgrid', 'alerts', 'bench',
    {UUID.format(6, "g")}, '{{}}', 'template-' || (g %% 8), '', g %% 9 = 0
FROM generate_series(1, %(count)s) AS g
"""  # noqa: S608 (numbers and fixed names only)

# The floor of a full run: the same events read once and grouped as a run groups them.
FLOOR = """
SELECT count(*) FROM (
    SELECT date_trunc('hour', occurred_at, 'UTC'), channel, provider, category, template,
        variant, campaign_id, step_id, count(*), sum(latency_ms)
    FROM analytics_event
    WHERE type IN ('sent', 'failed', 'retry', 'ambiguous', 'delivered', 'bounced',
        'complained', 'opened', 'clicked', 'unsubscribed')
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
) AS grouped
"""


def seed(total: int, days: int, now: dt.datetime) -> None:
    deliveries = int(total / EVENTS_PER_DELIVERY) + 1
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute(
            SEED,
            {
                "now": now,
                "n": deliveries,
                "span": dt.timedelta(days=days),
                "first": 1,
                "last": deliveries * 2,
                "limit": total,
            },
        )
        print(f"  {cursor.rowcount:>10,} events  {time.perf_counter() - started:6.1f} s")


def vacuum() -> None:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE analytics_event")
    print(f"  vacuum analyze {time.perf_counter() - started:6.1f} s")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(label: str, call) -> float:
    busy, total = machine_busy()
    started = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - started
    after_busy, after_total = machine_busy()
    share = 100 * (after_busy - busy) / max(after_total - total, 1e-9)
    print(f"  {label:48}{seconds:9.2f} s  busy {share:3.0f} %  {result}")
    return seconds


def floor_read() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SET work_mem = '256MB'")
        cursor.execute(FLOOR)
        groups = cursor.fetchone()[0]
        cursor.execute("RESET work_mem")
    return f"{groups:,} groups"


def rollup_counts() -> str:
    from analytics.models import Rollup

    hours = Rollup.objects.filter(granularity="hour").count()
    days = Rollup.objects.filter(granularity="day").count()
    return f"{hours:,} hour rows, {days:,} day rows"


def run_once() -> str:
    from analytics import rollups

    result = rollups.rollup_run(wait=True)
    return f"{result.events:,} events, {result.hours} hours, {result.days} days"


def wait_for_horizon() -> None:
    """Until every transaction that wrote the seed is below the snapshot horizon (another
    session's open transaction on the same server holds it back)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(xid)::text::bigint FROM analytics_event")
        newest = cursor.fetchone()[0]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            if cursor.fetchone()[0] > newest:
                return
            time.sleep(0.2)
    print("  (another session holds the horizon back: the run may miss the newest events)")


def late(count: int, now: dt.datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(LATE, {"now": now, "count": count})


def load(client: Client, path: str, requests: int, **headers) -> list[float] | None:
    """``requests`` timed loads after one outside the clock; None when the page is missing."""
    first = client.get(path, **headers)
    if first.status_code == 404:
        return None
    assert first.status_code == 200, (path, first.status_code, first.content[:300])
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path, **headers)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return times


def report(label: str, times: list[float] | None) -> None:
    if times is None:
        print(f"  {label:64} skipped: endpoint missing")
        return
    print(
        f"  {label:64}{statistics.median(times):8.1f}{percentile(times, 95):8.1f}"
        f"{percentile(times, 99):8.1f}"
    )


def part_rollups(args, now: dt.datetime) -> None:
    from analytics import rollups

    print("\nPart 1: rollups")
    timed("floor: the events read once, grouped, nothing written", floor_read)
    full = timed("first run: every event new", run_once)
    print(f"  {'':48}{'':9}  -> {rollup_counts()}")
    timed("a run with nothing new", run_once)
    late(args.late, timezone.now())
    wait_for_horizon()
    timed(f"incremental: {args.late:,} new events (late ones over 3 days)", run_once)
    timed(
        f"rebuild of the {args.days} days (analytics_rollup --rebuild)",
        lambda: rollups.rollup_rebuild(now - dt.timedelta(days=args.days), now).as_dict(),
    )
    print(f"  goal: first run < 30 s ({'met' if full < 30 else 'missed'})")


def part_pages(args, now: dt.datetime) -> None:
    from communication.auth import tokens
    from communication.models import User

    print(f"\nParts 2 and 3: pages over {args.days} days of rollups")
    print(f"  {'':64}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}")
    token = tokens.issue_service_token("bench", ["analytics:read"])
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    start = (now - dt.timedelta(days=args.days)).strftime("%Y-%m-%dT00:00:00Z")
    end = (now + dt.timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    report("reference: /health/live", load(client, "/health/live", args.requests))
    for granularity in ("day", "hour"):
        report(
            f"/api/v1/analytics/delivery ({granularity}, channel+provider)",
            load(
                client,
                f"/api/v1/analytics/delivery?from={start}&to={end}&granularity={granularity}"
                "&group_by=channel,provider",
                args.requests,
                **auth,
            ),
        )
    staff = Client()
    staff.force_login(User.objects.create_superuser("bench", "b@example.com", "bench"))
    report("reference: /admin/ (the console's home, 20 loads)", load(staff, "/admin/", 20))
    report(
        "/admin/analytics/dashboard/ (20 loads)",
        load(staff, "/admin/analytics/dashboard/", 20),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--late", type=int, default=10_000, help="events of the incremental run")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = SCRATCH
    settings.CACHES["default"]["KEY_PREFIX"] = "bench-analytics"
    # The 404s of the parts not built yet are expected: not worth a log line each.
    logging.getLogger("django.request").setLevel(logging.ERROR)
    print(f"scratch database {SCRATCH!r}: migrating")
    config = setup_databases(verbosity=0, interactive=False)
    try:
        from analytics import partitions

        now = timezone.now()
        created = partitions.partitions_ensure(now=now, since=now - dt.timedelta(days=args.days))
        print(f"  partitions: {', '.join(sorted(partitions.partitions_list()))}")
        assert created.moved == 0
        print(f"seeding {args.events:,} events over {args.days} days")
        seed(args.events, args.days, now)
        vacuum()
        wait_for_horizon()
        part_rollups(args, now)
        part_pages(args, now)
    finally:
        connection.close()
        teardown_databases(config, verbosity=0)


if __name__ == "__main__":
    main()
