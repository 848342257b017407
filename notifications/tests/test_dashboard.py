"""The staff console's home dashboard and provider health page, as a staff member reads them.

The pages are parsed (lxml) and read panel by panel: figures, chart data, tables, links, empty
states. The dashboard's query count is exact, and the same for an empty database as for one
with many deliveries, providers and versions waiting.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from lxml import html

from analytics import events
from analytics.models import Event
from communication import celery
from communication.compliance.keyed import lookup_hash
from communication.models import User
from notifications import dashboard, enqueue, services
from notifications.models import Delivery, Notification, NotificationRequest
from notifications.tests.dashboard_seed import BOUNCE, fake_sendgrid, seed, send
from templates_app.models import Template, TemplateVersion, VersionStatus

pytestmark = pytest.mark.django_db

HEALTH = "/admin/notifications/delivery/provider-health/"
# The session and its user, then the panels: sends (1), provider calls with their last error (1),
# backlog (1), failures (1), versions awaiting approval (1), scheduled soon and their count (2).
DASHBOARD_QUERIES = 2 + 7


@pytest.fixture
def staff_client(client):
    admin = User.objects.create_superuser(username="ops", email="ops@example.com", password="pw")
    client.force_login(admin)
    return client


def page(client, url: str = "/admin/"):
    response = client.get(url)
    assert response.status_code == 200, response.content[:2000]
    return html.fromstring(response.content.decode())


def panel(doc, key: str):
    (found,) = doc.xpath(f'//section[@data-panel="{key}"]')
    return found


def text(node) -> str:
    return " ".join(node.text_content().split())


def rows(node) -> list[list[str]]:
    return [[text(td) for td in tr.xpath("./td")] for tr in node.xpath(".//table//tbody/tr")]


def chart(node, index: int) -> dict:
    canvas = node.xpath('.//canvas[@class="chart"]')[index]
    return json.loads(canvas.get("data-value"))


# ------------------------------------------------------------------------------------ content


def test_an_empty_service_reads_well(staff_client):
    doc = page(staff_client)
    assert text(doc.xpath("//h1")[0]) == "Dashboard"
    sends = panel(doc, "notifications.sends")
    # A chart with nothing in it says so instead of drawing empty axes.
    assert not sends.xpath(".//canvas")
    assert "No sends yet" in text(sends)
    assert "No delivery failed in the last 24 hours." in text(panel(doc, "notifications.failures"))
    assert "No version is waiting for approval." in text(panel(doc, "templates.awaiting_approval"))
    assert "Nothing is scheduled for the next hour." in text(panel(doc, "notifications.due_soon"))
    backlog = panel(doc, "notifications.backlog")
    assert "Deliveries queued 0 nothing waiting" in text(backlog)
    # Each channel's chain (here the outbox for email and SMS), never called yet.
    assert [r[:4] for r in rows(panel(doc, "notifications.providers"))][:2] == [
        ["Email", "outbox", "—", "0"],
        ["SMS", "outbox", "—", "0"],
    ]


def test_a_morning_of_sends(staff_client, settings, httpserver):
    fake_sendgrid(settings, httpserver)
    seeded = seed()
    doc = page(staff_client)

    sends = panel(doc, "notifications.sends")
    kpis = {k.get("data-kpi"): text(k) for k in sends.xpath(".//*[@data-kpi]")}
    # 4 emails attempted, 2 texts, 1 in-app, 1 queued, 1 scheduled.
    assert kpis["today"] == "Today 9 1 failed"
    assert kpis["last-7-days"] == "Last 7 days 9 1 failed"
    assert kpis["failure-rate-7-days"].startswith("Failure rate, 7 days 11.1 %")
    by_status, by_channel = chart(sends, 0), chart(sends, 1)
    assert len(by_status["labels"]) == 7
    assert by_status["labels"][-1] == timezone.localdate().strftime("%a %-d")
    today = {d["label"]: d["data"][-1] for d in by_status["datasets"]}
    assert today == {
        "scheduled": 1,
        "queued": 1,
        "sent": 3,
        "delivered": 3,  # the outbox delivers SMS at once, and in-app is delivered on send
        "failed": 1,
    }
    assert {d["label"]: d["data"][-1] for d in by_channel["datasets"]} == {
        "Email": 6,
        "SMS": 2,
        "In-app": 1,
    }
    assert all(sum(d["data"][:-1]) == 0 for d in by_status["datasets"])  # nothing before today
    assert rows(sends) == [
        ["Email", "1", "1", "3", "0", "1", "6"],
        ["SMS", "0", "0", "0", "2", "0", "2"],
        ["In-app", "0", "0", "0", "1", "0", "1"],
    ]

    failures = panel(doc, "notifications.failures")
    ((reason, channel, count, last),) = rows(failures)
    assert (reason, channel, count, last) == ("rejected", "Email", "1", "less than a minute ago")
    assert failures.xpath(".//a[text()='Email']")[0].get("href") == (
        "/admin/notifications/delivery/?status__exact=failed&channel__exact=email"
    )

    providers = {r[1]: r for r in rows(panel(doc, "notifications.providers"))}
    channel, _, circuit, calls, success, p95, error = providers["sendgrid"]
    assert (channel, circuit, calls, success) == ("Email", "closed", "4", "75.0 %")
    assert p95.endswith(" ms")
    assert "Does not contain a valid address" in error
    assert providers["outbox"][:5] == ["SMS", "outbox", "—", "2", "100.0 %"]

    assert "Deliveries queued 1 the oldest waiting for less than a minute" in text(
        panel(doc, "notifications.backlog")
    )

    due = panel(doc, "notifications.due_soon")
    ((when, until, channel, category, to),) = rows(due)
    assert (channel, category, to) == ("Email", "alerts", "soon@example.com")
    assert when == timezone.localtime(
        Delivery.objects.get(pk=seeded.scheduled).scheduled_for
    ).strftime("%H:%M")
    assert until.startswith("in 29 minutes") or until.startswith("in 30 minutes")
    assert due.xpath(".//tbody//a")[0].get("href") == (
        f"/admin/notifications/delivery/{seeded.scheduled}/change/"
    )

    approval = panel(doc, "templates.awaiting_approval")
    ((version, template, by, waiting),) = rows(approval)
    assert (version, by, waiting) == (str(seeded.pending), "staff:grace", "less than a minute")
    assert template == seeded.pending.template.name
    link = approval.xpath(".//tbody//a")[0].get("href")
    assert link == f"/admin/templates_app/templateversion/{seeded.pending.pk}/change/"
    assert staff_client.get(link).status_code == 200


def test_failures_are_ranked_by_count(staff_client):
    since = timezone.now() - dt.timedelta(hours=25)
    for reason, channel, n in [("rejected", "email", 2), ("invalid", "sms", 5), ("", "push", 1)]:
        for _ in range(n):
            events.record("failed", channel=channel, data={"reason": reason} if reason else {})
    events.record("failed", channel="email", data={"reason": "ancient"})
    Event.objects.filter(data__reason="ancient").update(occurred_at=since)
    failures = rows(panel(page(staff_client), "notifications.failures"))
    assert [r[:3] for r in failures] == [
        ["invalid", "SMS", "5"],
        ["rejected", "Email", "2"],
        ["unspecified", "Push", "1"],
    ]


def test_scheduled_sends_list_the_first_and_count_the_rest(staff_client):
    now = timezone.now()
    for minutes in (-5, *range(10, 60, 5), 90):
        send(["email"], [{"email": f"s{minutes}@example.com"}])
        Delivery.objects.filter(address_hash=lookup_hash(f"s{minutes}@example.com")).update(
            status="scheduled", scheduled_for=now + dt.timedelta(minutes=minutes)
        )
    due = panel(page(staff_client), "notifications.due_soon")
    listed = rows(due)
    # Overdue first, then by time; 11 due within the hour, 8 shown, the one in 90 min left out.
    assert [r[4] for r in listed] == ["s-5@example.com"] + [
        f"s{m}@example.com" for m in range(10, 45, 5)
    ]
    assert listed[0][1].startswith("overdue 4 minutes") or listed[0][1].startswith("overdue 5")
    assert "And 3 more." in text(due)


# ---------------------------------------------------------------------------- provider health


def test_provider_health_groups_by_channel_and_provider(staff_client):
    """The outbox alias serves every channel: five emails through it are not SMS sends."""
    ids = send(["email"], [{"email": f"u{i}@example.com"} for i in range(5)])
    services.deliveries_attempt(ids)
    table = rows(page(staff_client, HEALTH))
    assert [r[:6] for r in table if r[0] != "Push"] == [
        ["Email", "1", "outbox", "—", "5", "100.0 %"],
        ["SMS", "1", "outbox", "—", "0", "—"],
    ]


def test_provider_health_shows_breakers_latency_and_last_error(staff_client, settings, httpserver):
    fake_sendgrid(settings, httpserver)
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "mailgun": {
            "BACKEND": "notifications.providers.mailgun.MailgunEmailProvider",
            "OPTIONS": {
                "API_KEY": "key-test",
                "SENDER_DOMAIN": "mg.example.com",
                "API_URL": httpserver.url_for("/mailgun/v3"),
            },
        },
    }
    settings.EMAIL_PROVIDERS = ["sendgrid", "mailgun"]
    services.deliveries_attempt(send(["email"], [{"email": "a@example.com"}, {"email": BOUNCE}]))
    # Latencies of one provider's calls, for a p95 that can be checked: 1..100 ms and a 5 ms retry,
    # whose 95th percentile (interpolated, as percentile_cont does) is 95 ms.
    for ms in range(1, 101):
        events.record("sent", channel="email", provider="mailgun", latency_ms=float(ms))
    events.record("retry", channel="email", provider="mailgun", latency_ms=5.0, data={"error": "x"})
    for _ in range(settings.PROVIDER_BREAKER_THRESHOLD):
        services.provider_breaker("mailgun").record_failure()
    doc = page(staff_client, HEALTH)
    table = {r[2]: r for r in rows(doc)}
    assert table["sendgrid"][:6] == ["Email", "1", "sendgrid", "closed", "2", "50.0 %"]
    assert "Does not contain a valid address" in table["sendgrid"][7]
    assert table["mailgun"][:7] == ["Email", "2", "mailgun", "open", "101", "99.0 %", "95 ms"]
    assert table["mailgun"][7] == "x"
    assert text(doc.xpath("//h1")[0]) == "Provider health"
    assert text(
        doc.xpath('//*[@id="health-windows"]/span[contains(@class, "bg-primary-100")]')[0]
    ) == ("last hour")


def test_provider_health_windows(staff_client):
    events.record("sent", channel="sms", provider="outbox", latency_ms=3.0)
    Event.objects.update(occurred_at=timezone.now() - dt.timedelta(hours=3))
    calls = {w: rows(page(staff_client, f"{HEALTH}?window={w}"))[1][4] for w in ("1h", "24h")}
    assert calls == {"1h": "0", "24h": "1"}
    # An unknown window is the default one, not an error.
    assert rows(page(staff_client, f"{HEALTH}?window=forever"))[1][4] == "0"


def test_a_provider_no_longer_in_the_chain_is_still_shown(staff_client):
    events.record("sent", channel="push", provider="fcm+webpush", latency_ms=40.0)
    table = rows(page(staff_client, HEALTH))
    assert table[-1][:5] == ["Push", "—", "fcm+webpush", "—", "1"]


# ------------------------------------------------------------------------------------- broker


@pytest.fixture
def own_queues(settings):
    """Our queues under a prefix of this test's own, emptied afterwards."""
    settings.CELERY_QUEUE_PREFIX = f"dash{uuid.uuid4().hex[:8]}-"
    yield settings.CELERY_QUEUE_PREFIX
    with celery.app.connection_for_write() as conn:
        channel = conn.channel()
        for name in settings.QUEUE_NAMES:
            channel.queue_purge(celery.queue(name))


def test_broker_queue_lengths(staff_client, own_queues):
    size = enqueue.BULK_DELIVERY_BATCH_SIZE
    enqueue.publish({celery.queue("bulk"): [str(uuid.uuid4()) for _ in range(2 * size + 1)]})
    enqueue.publish({celery.queue("realtime"): [str(uuid.uuid4())]})
    queues = rows(panel(page(staff_client), "notifications.backlog"))
    # Twice BULK_DELIVERY_BATCH_SIZE and one ids are three tasks on the bulk queue.
    assert queues == [["realtime", "1"], ["transactional", "0"], ["bulk", "3"], ["default", "0"]]


@pytest.mark.parametrize("broker", ["redis://127.0.0.1:1/0", "amqp://guest:guest@127.0.0.1:1//"])
def test_an_unreachable_broker_reads_unknown(staff_client, settings, broker):
    settings.CELERY_BROKER_URL = broker
    backlog = panel(page(staff_client), "notifications.backlog")
    assert [r[1] for r in rows(backlog)] == ["unknown"] * 4
    assert "The broker did not answer" in text(backlog)


# -------------------------------------------------------------------------------- query count


def many_rows(n_deliveries: int = 400) -> None:
    """Deliveries in every channel and status over the week, calls of many providers, versions
    waiting, sends due soon: written in bulk (the volume, not the path, matters here)."""
    now = timezone.now()
    channels = ["email", "sms", "push", "in_app"]
    statuses = list(Delivery.RANK)
    request = NotificationRequest.objects.create(caller="bulk", category_id="alerts")
    notifications = Notification.objects.bulk_create(
        Notification(request=request, recipient={}, category_id="alerts")
        for _ in range(n_deliveries)
    )
    Delivery.objects.bulk_create(
        Delivery(
            notification=n,
            channel=channels[i % 4],
            status=statuses[i % len(statuses)],
            address=f"m{i}@example.com",
            scheduled_for=now + dt.timedelta(minutes=i % 50),
        )
        for i, n in enumerate(notifications)
    )
    Delivery.objects.update(created_at=now - dt.timedelta(hours=1))
    for i, d in enumerate(Delivery.objects.all()[: n_deliveries // 2]):
        Delivery.objects.filter(pk=d.pk).update(created_at=now - dt.timedelta(days=i % 7))
    events.record_many(
        [
            {
                "type": ["sent", "retry", "failed", "ambiguous"][i % 4],
                "channel": channels[i % 3],
                "provider": f"provider{i % 12}",
                "latency_ms": float(i % 300),
                "data": {"reason": f"reason{i % 9}", "error": f"error {i}"},
            }
            for i in range(600)
        ]
    )
    template = Template.objects.get(key="welcome-email")
    base = template.versions.order_by("-number").first().number
    TemplateVersion.objects.bulk_create(
        TemplateVersion(
            template=template,
            language="en",
            number=base + i + 1,
            status=VersionStatus.PENDING,
            created_by="staff:x",
            submitted_by="staff:x",
            submitted_at=now,
            subject="s",
            html="<p>h</p>",
        )
        for i in range(15)
    )


def test_the_dashboard_costs_the_same_queries_empty_and_full(
    staff_client, django_assert_num_queries
):
    staff_client.get("/admin/")  # warm-up: the provider chains, content types
    with django_assert_num_queries(DASHBOARD_QUERIES):
        empty = staff_client.get("/admin/")
    assert b"No sends yet" in empty.content

    many_rows()
    # One delivery in every status in turn: a share of them scheduled, due soon.
    assert Delivery.objects.filter(status="scheduled").count() >= 400 // len(Delivery.RANK)
    assert Event.objects.values("provider").annotate(n=Count("id")).count() == 12
    with django_assert_num_queries(DASHBOARD_QUERIES):
        full = staff_client.get("/admin/")
    assert b"No sends yet" not in full.content
    assert full.content.count(b"/admin/templates_app/templateversion/") >= 8


# ------------------------------------------------------------------------------------ indexes


def plans(fn) -> list[str]:
    """The plans of the statements ``fn`` runs, with sequential and bitmap scans off (on tables
    this small PostgreSQL would scan them whatever the indexes, which proves nothing)."""
    with CaptureQueriesContext(connection) as captured:
        fn()
    out = []
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        for query in captured.captured_queries:
            cursor.execute(f"EXPLAIN {query['sql']}")
            out.append("\n".join(row[0] for row in cursor.fetchall()))
    return out


def test_the_volume_queries_read_their_covering_indexes():
    many_rows()
    events.record_many(
        [
            {"type": ["queued", "delivered", "opened"][i % 3], "channel": "email"}
            for i in range(3000)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE notifications_delivery, analytics_event")
    since = timezone.now() - dt.timedelta(hours=24)
    (sends,) = plans(lambda: dashboard.sends_by_day(days=7))
    assert "Index Only Scan using delivery_created" in sends, sends
    (calls,) = plans(lambda: dashboard.provider_stats(since=since))
    # The event table is partitioned: each partition's index is named after its columns.
    assert "Index Only Scan using analytics_event_p" in calls and "Seq Scan" not in calls, calls
    assert "_channel_provider_occurred_at_idx" in calls, calls
    (failures,) = plans(lambda: dashboard.failure_reasons(since=since))
    assert "Index Only Scan using" in failures and "Seq Scan" not in failures, failures
    (backlog,) = plans(dashboard.backlog)
    assert "Seq Scan" not in backlog and "delivery_queued" in backlog, backlog
    first, count = plans(lambda: dashboard.due_soon(within=dt.timedelta(hours=1)))
    assert "delivery_due" in first and "delivery_due" in count, (first, count)
