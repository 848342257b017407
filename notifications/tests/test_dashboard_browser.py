"""The dashboard in headless Chromium, under the console's Content-Security-Policy: empty, then
after a morning of sends; its charts drawn by unfold's Chart.js from their data attributes, its
links followed. Screenshots: ``var/screenshots/dashboard-empty.png``, ``dashboard.png``,
``provider-health.png``.
"""

from __future__ import annotations

import uuid

import pytest

from communication import celery
from communication.models import User
from conftest import ROOT, chromium, needs_chromium
from notifications.tests.dashboard_seed import fake_sendgrid, seed
from tests.security.test_headers import PASSWORD, Watched

SHOTS = ROOT / "var" / "screenshots"
# What each chart holds once drawn: whether Chart.js made a chart of the canvas, its datasets,
# and the height it was given.
CHARTS = """() => [...document.querySelectorAll("canvas.chart")].map((canvas) => {
    const chart = Chart.getChart(canvas);
    return {
        drawn: chart !== undefined,
        datasets: chart ? chart.data.datasets.length : 0,
        height: canvas.getBoundingClientRect().height,
    };
})"""


@pytest.fixture
def own_queues(settings):
    """What the seeding enqueues goes to queues of this test's own, purged afterwards (nothing
    consumes them: the test delivers in its own process)."""
    settings.CELERY_QUEUE_PREFIX = f"dash{uuid.uuid4().hex[:8]}-"
    settings.DELIVERY_ENQUEUE_LINGER_MS = 0
    yield
    with celery.app.connection_for_write() as conn:
        channel = conn.channel()
        for name in settings.QUEUE_NAMES:
            channel.queue_purge(celery.queue(name))


def log_in(browser, url: str) -> Watched:
    watched = Watched(browser, url)
    page = watched.page
    page.set_viewport_size({"width": 1440, "height": 900})
    watched.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "dash-admin")
    page.fill("#id_password", PASSWORD)
    page.click("form#login-form [type=submit]")
    page.wait_for_url("**/admin/")
    return watched


@needs_chromium
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_dashboard_in_the_browser(live_asgi, settings, httpserver, own_queues):
    User.objects.create_superuser("dash-admin", "dash@example.com", PASSWORD)
    fake_sendgrid(settings, httpserver)
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Nothing sent yet: the page says so rather than drawing empty axes.
    with chromium() as browser:
        watched = log_in(browser, live_asgi.url)
        page = watched.page
        page.locator("#sends-empty").wait_for()
        assert page.locator("canvas").count() == 0
        page.screenshot(path=SHOTS / "dashboard-empty.png", full_page=True)
        violations, console = watched.violations(), watched.console
    assert violations == []
    assert console == []

    # (The ORM refuses to run inside Playwright's event loop: the data comes in between.)
    seeded = seed()
    with chromium() as browser:
        watched = log_in(browser, live_asgi.url)
        page = watched.page
        page.locator("canvas.chart").first.wait_for()
        charts = page.evaluate(CHARTS)
        assert [c["drawn"] for c in charts] == [True, True]
        assert [c["datasets"] for c in charts] == [5, 3]  # five statuses, three channels
        assert all(c["height"] > 150 for c in charts)
        panel = page.locator('section[data-panel="notifications.providers"]')
        assert "sendgrid" in panel.inner_text()
        page.screenshot(path=SHOTS / "dashboard.png", full_page=True)

        # The version waiting for approval is one click away.
        page.locator('section[data-panel="templates.awaiting_approval"] tbody a').first.click()
        page.wait_for_url(f"**/admin/templates_app/templateversion/{seeded.pending.pk}/change/")
        assert "Friendlier subject" in page.content()

        page.go_back()
        panel.locator("a", has_text="Provider health").click()
        page.wait_for_url("**/provider-health/")
        page.locator("table").first.wait_for()
        page.screenshot(path=SHOTS / "provider-health.png", full_page=True)
        violations, console = watched.violations(), watched.console
    assert violations == []
    assert console == []
