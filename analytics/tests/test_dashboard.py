"""The analytics pages of the staff console, read as a staff member reads them (lxml): figures,
chart data, tables and the A/B result from seeded rollups; the filters' validation; who may
see the pages; and a query count that does not grow with the rollups."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from lxml import html

from analytics import stats
from analytics.models import Granularity, Rollup
from analytics.tests import dashboard_seed
from analytics.tests.dashboard_seed import CAMPAIGN, STEP_1, STEP_2, TEMPLATE
from communication.models import Category, User

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/analytics/dashboard/"
TEMPLATE_REPORT = f"/admin/analytics/report/template/{TEMPLATE}/"
CAMPAIGN_REPORT = f"/admin/analytics/report/campaign/{CAMPAIGN}/"
# The session and its user, the staff member's permissions (theirs, their groups'), the
# categories of the filter, the series by provider, the providers' counters and histograms.
DASHBOARD_QUERIES = 2 + 2 + 1 + 3


@pytest.fixture
def analyst(client):
    """A staff member (not a superuser) with the analytics permission alone."""
    user = User.objects.create_user(
        username="ana", email="ana@example.com", password="pw", is_staff=True
    )
    user.user_permissions.add(Permission.objects.get(codename="view_rollup"))
    client.force_login(user)
    return client


@pytest.fixture
def now():
    return timezone.now()


def get(client, url: str, status: int = 200):
    response = client.get(url)
    assert response.status_code == status, response.content[:3000]
    return html.fromstring(response.content.decode())


def text(node) -> str:
    return " ".join(node.text_content().split())


def kpis(doc) -> dict[str, str]:
    return {k.get("data-kpi"): text(k) for k in doc.xpath("//*[@data-kpi]")}


def chart(doc, chart_id: str) -> dict:
    (canvas,) = doc.xpath(f'//canvas[@id="{chart_id}"]')
    return json.loads(canvas.get("data-value"))


def rows(doc, table_id: str) -> list[list[str]]:
    return [
        [text(td) for td in tr.xpath("./td")] for tr in doc.xpath(f'//*[@id="{table_id}"]/tbody/tr')
    ]


def week_totals(now, **dims) -> dict[str, int]:
    start = (now.astimezone(dt.UTC) - dt.timedelta(days=6)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    rows = Rollup.objects.filter(granularity=Granularity.HOUR, bucket__gte=start, **dims)
    out: dict[str, int] = {}
    for r in rows:
        for name in (
            "sent", "delivered", "failed", "bounced", "opened_unique", "clicked_unique",
            "possibly_duplicate",
        ):  # fmt: skip
            out[name] = out.get(name, 0) + getattr(r, name)
    return out


# ------------------------------------------------------------------------------------- dashboard


def test_an_empty_range_says_so(analyst):
    doc = get(analyst, DASHBOARD)
    assert text(doc.xpath("//h1")[0]).startswith("Analytics")
    assert "Nothing was sent in this range" in text(doc.xpath('//*[@id="analytics-empty"]')[0])
    assert not doc.xpath("//canvas")
    assert kpis(doc)["sent"].startswith("Sent 0")


def test_a_week_of_sends(analyst, now):
    dashboard_seed.seed(now)
    doc = get(analyst, DASHBOARD)  # the last 7 days, by day
    expected = week_totals(now)

    figures = kpis(doc)
    assert figures["sent"] == f"Sent {expected['sent']:,} accepted by a provider"
    delivered_rate = 100 * expected["delivered"] / expected["sent"]
    assert figures["delivered"] == (
        f"Delivered {expected['delivered']:,} {delivered_rate:.1f} % of sent"
    )
    assert figures["opened"].startswith(f"Opened {expected['opened_unique']:,} ")
    duplicate_rate = 100 * expected["possibly_duplicate"] / expected["sent"]
    assert figures["possibly_duplicate"] == (
        f"Possibly duplicate {expected['possibly_duplicate']:,} {duplicate_rate:.2f} % of sent, "
        "re-sent after a crash"
    )

    delivery = chart(doc, "chart-delivery")
    assert len(delivery["labels"]) == 7
    assert delivery["labels"][-1] == now.astimezone(dt.UTC).strftime("%d %b")
    assert [d["label"] for d in delivery["datasets"]] == ["sent", "delivered", "failed", "bounced"]
    for d in delivery["datasets"]:
        assert sum(d["data"]) == expected[d["label"]]

    funnel = chart(doc, "chart-funnel")
    assert funnel["labels"] == ["Sent", "Delivered", "Opened", "Clicked"]
    assert funnel["datasets"][0]["data"] == [
        expected["sent"], expected["delivered"], expected["opened_unique"],
        expected["clicked_unique"],
    ]  # fmt: skip
    # Each step narrower than the one before.
    assert funnel["datasets"][0]["data"] == sorted(funnel["datasets"][0]["data"], reverse=True)

    cost = {r[0]: r for r in rows(doc, "cost-table")}
    assert list(cost) == ["twilio", "sendgrid", "mailgun"]  # the dearest first; free ones out
    twilio_sent = week_totals(now, provider="twilio")["sent"]
    # In decimal, as the service counts money (a float's 103.275 is 103.27499…).
    assert cost["twilio"][1:3] == [
        f"{twilio_sent:,}",
        f"{twilio_sent * Decimal('0.045'):,.2f} EUR",
    ]
    cost_chart = chart(doc, "chart-cost")
    assert {d["label"] for d in cost_chart["datasets"]} == {"twilio", "sendgrid", "mailgun"}

    providers = {r[1]: r for r in rows(doc, "providers-table")}
    assert set(providers) == {"sendgrid", "mailgun", "twilio", "fcm"}  # in-app calls none
    channel, _, calls, errors, success, p50, p95, _sent, _duplicate = providers["twilio"]
    assert channel == "sms"
    calls, errors = int(calls.replace(",", "")), int(errors.replace(",", ""))
    assert calls == week_totals(now, provider="twilio")["sent"]  # one call per SMS sent
    assert success == f"{100 * (1 - errors / calls):.1f} %"
    assert p50.endswith(" ms") and p95.endswith(" ms")
    sendgrid_duplicates = week_totals(now, provider="sendgrid")["possibly_duplicate"]
    assert sendgrid_duplicates and providers["sendgrid"][8] == f"{sendgrid_duplicates:,}"
    assert float(p50[:-3].replace(",", "")) < float(p95[:-3].replace(",", ""))
    latency = chart(doc, "chart-latency")
    assert [d["label"] for d in latency["datasets"]] == ["p50", "p95"]
    assert len(latency["labels"]) == 4


def test_filters_narrow_every_figure(analyst, now):
    dashboard_seed.seed(now)
    Category.objects.get_or_create(key="marketing", defaults={"name": "Marketing"})
    doc = get(analyst, f"{DASHBOARD}?range=24h&channel=sms&category=alerts")
    start = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(
        hours=23
    )
    sms = Rollup.objects.filter(
        granularity=Granularity.HOUR, bucket__gte=start, channel="sms", category="alerts"
    )
    sent = sum(r.sent for r in sms)
    assert kpis(doc)["sent"].startswith(f"Sent {sent:,} ")
    delivery = chart(doc, "chart-delivery")
    assert len(delivery["labels"]) == 24  # by hour
    assert sum(delivery["datasets"][0]["data"]) == sent
    assert [r[1] for r in rows(doc, "providers-table")] == ["twilio"]
    # The form shows what it filters on.
    assert doc.xpath('//select[@name="channel"]/option[@selected]/@value') == ["sms"]
    assert doc.xpath('//select[@name="range"]/option[@selected]/@value') == ["24h"]


def test_a_custom_range_of_one_day_reads_hours(analyst, now):
    dashboard_seed.seed(now)
    day = now.astimezone(dt.UTC).date() - dt.timedelta(days=2)
    doc = get(analyst, f"{DASHBOARD}?range=custom&from={day}&to={day}")
    delivery = chart(doc, "chart-delivery")
    assert delivery["labels"][:2] == ["00:00", "01:00"] and len(delivery["labels"]) == 24
    expected = Rollup.objects.get(
        granularity=Granularity.DAY,
        bucket=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC),
        provider="twilio",
    )
    twilio = next(r for r in rows(doc, "providers-table") if r[1] == "twilio")
    assert twilio[2] == f"{expected.provider_calls:,}"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("range=year", "Range: Select a valid choice. year is not one of the available choices."),
        ("range=custom&from=2026-03-10", "A custom range needs both days, from and to."),
        ("from=2026-03-10&to=2026-03-01", "The range ends before it starts"),
        ("from=2020-01-01&to=2026-01-01", "The range is longer than 366 days"),
        ("from=yesterday&to=2026-01-01", "From: Enter a valid date."),
        ("channel=pigeon", "Channel: Select a valid choice. pigeon is not one of"),
        ("category=nope", "Category: Select a valid choice. nope is not one of"),
    ],
)
def test_bad_filters_are_explained(analyst, query, message):
    doc = get(analyst, f"{DASHBOARD}?{query}", status=400)
    errors = text(doc.xpath('//*[@id="analytics-errors"]')[0])
    assert message in errors
    assert not doc.xpath("//canvas")
    # The form is still there to correct them.
    assert doc.xpath('//form[@id="analytics-filters"]')


def test_a_nul_byte_is_refused_before_the_page(analyst):
    response = analyst.get(f"{DASHBOARD}?channel=sms%00")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


def test_staff_without_the_permission_are_refused(client):
    clerk = User.objects.create_user(
        username="clerk", email="clerk@example.com", password="pw", is_staff=True
    )
    clerk.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    client.force_login(clerk)
    for url in (DASHBOARD, TEMPLATE_REPORT, CAMPAIGN_REPORT):
        assert client.get(url).status_code == 403, url
    # Nor is the page in their sidebar.
    assert DASHBOARD not in client.get("/admin/").content.decode()
    # Someone who is not staff is sent to the login page.
    client.logout()
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_sidebar_links_the_dashboard(analyst):
    doc = get(analyst, DASHBOARD)
    (link,) = doc.xpath(f'//nav//a[@href="{DASHBOARD}"]')
    assert "Analytics" in text(link)


@pytest.mark.parametrize("n", [10, 200])
def test_the_dashboard_query_count_does_not_grow(analyst, now, n):
    written = dashboard_seed.bulk(now, n)
    assert written >= n
    for query in ("", "?range=24h", "?range=90d&channel=email"):
        with CaptureQueriesContext(connection) as queries:
            get(analyst, DASHBOARD + query)
        assert len(queries) == DASHBOARD_QUERIES, "\n".join(q["sql"] for q in queries)


# --------------------------------------------------------------------------------------- reports


def test_the_template_report_shows_the_ab_result(analyst, now):
    dashboard_seed.seed(now)
    doc = get(analyst, TEMPLATE_REPORT)  # the last 30 days by default
    start = (now.astimezone(dt.UTC) - dt.timedelta(days=29)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    days = Rollup.objects.filter(granularity=Granularity.DAY, bucket__gte=start, template=TEMPLATE)
    per_variant: dict[str, list[int]] = {}
    for r in days:
        sent_opened = per_variant.setdefault(r.variant, [0, 0])
        sent_opened[0] += r.sent
        sent_opened[1] += r.opened_unique
    (a_sent, a_opened), (b_sent, b_opened) = per_variant["a"], per_variant["b"]
    expected = stats.two_proportion_ztest(b_opened, b_sent, a_opened, a_sent)

    (ab,) = doc.xpath('//*[@data-ab="Variants"]')
    facts = {dd.get("data-fact"): text(dd) for dd in ab.xpath(".//dd")}
    assert facts["test"] == "two-proportion z-test on unique opens"
    assert facts["p-value"] == (
        f"{expected.p_value:.4f}" if expected.p_value >= 0.0001 else "< 0.0001"
    )
    lo, hi = expected.diff_ci
    assert facts["ci"] == f"[{100 * lo:+.2f}, {100 * hi:+.2f}] pts"
    assert "b beats a: significant at 95 %" in text(ab)
    assert facts["needed"] == "—"
    variants = [[text(td) for td in tr.xpath("./td")] for tr in ab.xpath(".//tbody/tr")]
    assert [v[:3] for v in variants] == [
        ["a", f"{a_sent:,}", f"{a_opened:,}"],
        ["b", f"{b_sent:,}", f"{b_opened:,}"],
    ]
    # The variants' rows, campaign sends of the template included.
    assert [r[0] for r in rows(doc, "breakdown-table")] == ["a", "b"]
    assert len(chart(doc, "chart-counts")["labels"]) == 30
    assert [d["label"] for d in chart(doc, "chart-rates")["datasets"]] == [
        "open rate",
        "click rate",
    ]

    # On clicks instead of opens.
    doc = get(analyst, TEMPLATE_REPORT + "?metric=click")
    facts = {dd.get("data-fact"): text(dd) for dd in doc.xpath('//*[@data-ab="Variants"]//dd')}
    assert facts["test"] == "two-proportion z-test on unique clicks"


def test_a_close_test_says_how_many_more_sends_it_needs(analyst, now):
    hour = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    base = {"channel": "email", "provider": "sendgrid", "category": "marketing", "template": "t"}
    streams = [
        dashboard_seed.Stream({**base, "variant": "a"}, 50, 1, 0, 0, 0.20, 0.02, 0, 5, 0),
        dashboard_seed.Stream({**base, "variant": "b"}, 50, 1, 0, 0, 0.22, 0.02, 0, 5, 0),
    ]
    dashboard_seed.write([hour], streams)
    doc = get(analyst, "/admin/analytics/report/template/t/?range=24h")
    (ab,) = doc.xpath('//*[@data-ab="Variants"]')
    facts = {dd.get("data-fact"): text(dd) for dd in ab.xpath(".//dd")}
    assert "Not significant at 95 %" in text(ab)
    scale = 2 if 9 <= hour.hour <= 18 else 1
    needed = stats.sample_size_two_proportions(
        round(50 * scale * 0.22) / (50 * scale), round(50 * scale * 0.20) / (50 * scale)
    )
    assert facts["needed"] == f"{needed:,} per variant"


def test_the_campaign_report_per_step(analyst, now):
    dashboard_seed.seed(now)
    doc = get(analyst, CAMPAIGN_REPORT + "?range=7d")
    steps = rows(doc, "breakdown-table")
    assert [(r[0], r[1]) for r in steps] == [
        ("5e9a1b2c…", "a"),
        ("5e9a1b2c…", "b"),
        ("7b3f4d5e…", "—"),
    ]
    assert doc.xpath('//*[@id="breakdown-table"]//td/@data-step') == [
        str(STEP_1),
        str(STEP_1),
        str(STEP_2),
    ]
    # Step 1 tests its two variants; step 2 has one and no test.
    assert [t.get("data-ab") for t in doc.xpath("//*[@data-ab]")] == [str(STEP_1)]
    campaign = week_totals(now, campaign_id=CAMPAIGN)
    assert kpis(doc)["sent"] == f"Sent {campaign['sent']:,}"


def test_a_report_without_data_and_bad_parameters(analyst):
    doc = get(analyst, "/admin/analytics/report/template/never-sent/")
    assert "Nothing was sent in this range" in text(doc)
    doc = get(analyst, TEMPLATE_REPORT + "?metric=revenue", status=400)
    assert "Metric: 'revenue' is not one of open, click." in text(doc)
    doc = get(analyst, TEMPLATE_REPORT + "?from=2026-02-30&to=2026-03-01", status=400)
    assert "From: Enter a valid date." in text(doc)
    assert analyst.get("/admin/analytics/report/campaign/not-a-uuid/").status_code == 404


def test_the_template_page_links_its_report(client):
    from templates_app.models import Template  # noqa: PLC0415 - the test crosses apps, the code does not

    template = Template.objects.first()
    assert template is not None
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    doc = get(client, f"/admin/templates_app/template/{template.pk}/change/")
    (link,) = doc.xpath('//a[contains(@href, "/admin/analytics/report/template/")]')
    assert link.get("href") == f"/admin/analytics/report/template/{template.key}/"
    assert get(client, link.get("href")) is not None
