"""``/api/docs/`` (Swagger UI) and ``/api/redoc/`` in headless Chromium, served by a real uvicorn
process: both render the schema with no request to any host but the service (their assets come
from drf-spectacular-sidecar, not a CDN). Skipped, saying why, where Debian's ``chromium`` or
Playwright is missing."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from conftest import chromium, needs_chromium

pytestmark = [
    needs_chromium,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

TITLE = "Communication Service API"


def open_page(base: str, path: str, ready: str) -> tuple[str, list[str], list[str]]:
    """Loads ``path`` until ``ready`` (a selector) shows; returns the page's text, the requests
    it made to other hosts (refused, so a test offline and one online see the same) and its
    script errors."""
    service = urlsplit(base).netloc
    elsewhere: list[str] = []
    errors: list[str] = []

    def only_the_service(route):
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == service:
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    with chromium() as browser:
        context = browser.new_context()
        context.route("**/*", only_the_service)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}{path}")
        page.wait_for_selector(ready, timeout=30_000)
        text = page.inner_text("body")
    return text, elsewhere, errors


def test_swagger_ui_shows_the_operations_offline(live_asgi):
    text, elsewhere, errors = open_page(live_asgi.url, "/api/docs/", ".opblock")
    assert elsewhere == [], "the docs asked another host"
    assert errors == []
    assert TITLE in text
    assert "/api/v1/notifications" in text


def test_redoc_shows_the_api_offline(live_asgi):
    text, elsewhere, errors = open_page(live_asgi.url, "/api/redoc/", "h1")
    assert elsewhere == [], "the docs asked another host"
    assert errors == []
    assert TITLE in text
    assert "notifications_send" in text or "/notifications" in text
