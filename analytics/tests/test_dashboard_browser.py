"""The analytics pages in headless Chromium, under the console's Content-Security-Policy, over a
week of seeded rollups: every chart drawn (its canvas holds its datasets' colours, not only
axes), no console error, filters that re-render the page, and the template report's A/B result.
Screenshots: ``var/screenshots/analytics-dashboard.png``, ``analytics-dashboard-sms.png``,
``analytics-template-report.png``, ``analytics-campaign-report.png``.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from analytics.tests import dashboard_seed
from analytics.tests.dashboard_seed import CAMPAIGN, TEMPLATE
from communication.models import User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

# Per chart: whether Chart.js made a chart of the canvas, its datasets and labels, and how many
# of its pixels are exactly its first dataset's colour (bars and lines are filled with it; an
# empty chart has axes and text only).
CHARTS = """() => [...document.querySelectorAll("canvas.analytics-chart")].map((canvas) => {
    const chart = Chart.getChart(canvas);
    if (!chart) return {id: canvas.id, drawn: false};
    let color = chart.data.datasets[0].backgroundColor;
    color = Array.isArray(color) ? color[0] : color;
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 0; i < pixels.length; i += 4) {
        if (pixels[i] === r && pixels[i + 1] === g && pixels[i + 2] === b && pixels[i + 3] === 255) {
            painted++;
        }
    }
    return {
        id: canvas.id,
        drawn: true,
        datasets: chart.data.datasets.length,
        labels: chart.data.labels.length,
        painted,
        height: canvas.getBoundingClientRect().height,
    };
})"""


def charts(page) -> dict[str, dict]:
    return {c["id"]: c for c in page.evaluate(CHARTS)}


def all_drawn(found: dict[str, dict]) -> None:
    for chart_id, chart in found.items():
        assert chart["drawn"], chart_id
        assert chart["painted"] > 50, chart  # its colour, not only axes
        assert chart["height"] > 150, chart


def test_the_analytics_pages_in_the_browser(live_asgi):
    User.objects.create_superuser("analytics-admin", "analytics@example.com", STAFF_PASSWORD)
    dashboard_seed.seed(timezone.now())
    today = timezone.now().astimezone(dt.UTC).date()
    with chromium() as browser:
        staff = StaffBrowser(browser, live_asgi.url, "analytics-admin", height=1000)
        page = staff.page

        # From the sidebar.
        page.locator("nav a", has_text="Analytics").first.click()
        page.wait_for_url("**/admin/analytics/dashboard/")
        page.locator("canvas.analytics-chart").first.wait_for()
        found = charts(page)
        assert set(found) == {
            "chart-delivery",
            "chart-funnel",
            "chart-cost",
            "chart-success",
            "chart-latency",
        }
        all_drawn(found)
        # Sends repeated after a worker crash: a figure beside the others.
        duplicates = page.locator('[data-kpi="possibly_duplicate"]')
        assert duplicates.is_visible()
        assert duplicates.inner_text().lower().startswith("possibly duplicate\n")
        assert found["chart-delivery"]["datasets"] == 4  # sent, delivered, failed, bounced
        assert found["chart-delivery"]["labels"] == 7  # the last 7 days
        assert found["chart-latency"]["labels"] == 4  # four providers called
        assert staff.fits()
        staff.screenshot("analytics-dashboard")

        # A channel: the page re-renders for it alone.
        page.select_option("select[name=channel]", "sms")
        page.wait_for_url("**channel=sms**")
        page.locator("canvas.analytics-chart").first.wait_for()
        found = charts(page)
        all_drawn({k: v for k, v in found.items() if k != "chart-funnel"})
        assert found["chart-latency"]["labels"] == 1
        providers = page.locator("#providers-table tbody tr")
        assert providers.count() == 1 and "twilio" in providers.inner_text()
        staff.screenshot("analytics-dashboard-sms")

        # The last 24 hours, by hour; the channel kept.
        page.select_option("select[name=range]", "24h")
        page.wait_for_url("**range=24h**")
        assert "channel=sms" in page.url
        assert "from=" not in page.url  # a preset range leaves the days out
        page.locator("canvas.analytics-chart").first.wait_for()
        assert charts(page)["chart-delivery"]["labels"] == 24

        # Two days of one's choosing: typing them switches to a custom range.
        page.fill("input[name=from]", f"{today - dt.timedelta(days=1)}")
        page.fill("input[name=to]", f"{today}")
        page.wait_for_url("**range=custom**")
        assert page.locator("select[name=range]").input_value() == "custom"
        page.locator("canvas.analytics-chart").first.wait_for()
        assert charts(page)["chart-delivery"]["labels"] == 48  # two days, by hour

        # A day that is not one: the page explains, and draws nothing.
        response = page.goto("/admin/analytics/dashboard/?from=2026-02-30&to=2026-03-01")
        assert response is not None and response.status == 400
        assert "From: Enter a valid date." in page.locator("#analytics-errors").inner_text()
        assert page.locator("canvas").count() == 0

        # The template's report and its A/B result.
        staff.goto(f"/admin/analytics/report/template/{TEMPLATE}/")
        page.locator("canvas.analytics-chart").first.wait_for()
        found = charts(page)
        assert set(found) == {"chart-counts", "chart-rates"}
        all_drawn(found)
        ab = page.locator('[data-ab="Variants"]')
        assert "b beats a: significant at 95 %" in ab.inner_text()
        assert "two-proportion z-test" in ab.locator('[data-fact="test"]').inner_text()
        assert ab.locator("tbody tr").count() == 2
        staff.screenshot("analytics-template-report")

        # Clicks instead of opens, from the card's switch.
        page.locator("a.analytics-chip", has_text="clicks").click()
        page.wait_for_url("**metric=click**")
        assert "unique clicks" in page.locator('[data-ab="Variants"]').inner_text()

        staff.goto(f"/admin/analytics/report/campaign/{CAMPAIGN}/?range=7d")
        page.locator("canvas.analytics-chart").first.wait_for()
        all_drawn(charts(page))
        assert page.locator("#breakdown-table tbody tr").count() == 3
        staff.screenshot("analytics-campaign-report")
        errors = list(staff.errors)
    # A 400 page logs its status as a console error; nothing else may.
    assert [e for e in errors if "status of 400" not in e] == []
