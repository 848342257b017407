"""The template review flow clicked through in Chromium, as staff do it: one staff member writes
and submits, another approves, and a rollback makes the first version live again. After each
click the public API (a service token) says what is live and what a render gives.

Skips, saying why, where Debian's chromium or Playwright is missing.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from communication.models import User
from conftest import SCREENSHOTS, STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium
from templates_app import services
from templates_app.models import TemplateVersion

SUBMIT_LINE = "button[name=templates_app_templateversion_submit_for_approval]"
VERSION_URL = re.compile(r"/admin/templates_app/templateversion/([0-9a-f-]{36})/change/")


class Staff(StaffBrowser):
    """One staff member's browser context, and what the review flow reads on its pages."""

    def __init__(self, browser, base_url: str, username: str):
        super().__init__(browser, base_url, username, height=1000)

    def click(self, selector: str) -> None:
        """Clicks what submits a form and waits for the page it leads to."""
        with self.page.expect_navigation():
            self.page.click(selector)

    def status(self) -> str:
        return " ".join(self.page.locator("[data-status-label]").inner_text().split()).lower()

    def messages(self) -> str:
        return self.page.locator("#main").inner_text()

    def version_id(self) -> str:
        match = VERSION_URL.search(self.page.url)
        assert match, self.page.url
        return match.group(1)

    def fits(self) -> bool:
        """Nothing wider than the window (no horizontal scroll at 1440 px)."""
        width, window = self.page.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth]"
        )
        return width <= window


class Api:
    """The public API as a sending service sees it."""

    def __init__(self, base_url: str, token: str, key: str):
        self.base = base_url
        self.token = token
        self.key = key

    def _call(self, method: str, path: str, body=None) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{self.base}/api/v1/templates{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def live(self) -> list[tuple[str, int, str]]:
        status, body = self._call("GET", f"/{self.key}")
        assert status == 200, body
        return [(v["language"], v["number"], v["id"]) for v in body["live"]]

    def render(self) -> str:
        status, body = self._call(
            "POST", "/render", {"template": self.key, "data": {"name": "Ada"}, "locale": "en"}
        )
        return body["text"] if status == 200 else body["code"]


@needs_chromium
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_write_submit_approve_and_roll_back_by_clicking(live_asgi, make_service_token):
    for username in ("ann", "ben"):
        User.objects.create_superuser(username, f"{username}@example.com", STAFF_PASSWORD)
    # A key of its own: the live server's render cache (Redis) outlives a test run.
    key = f"browser-review-{uuid.uuid4().hex[:8]}"
    template = services.template_create(
        actor="staff:ann",
        key=key,
        name="Browser review",
        category="transactional",
        channel="sms",
        variables=[{"name": "name", "type": "string", "example": "Ada"}],
    )
    email = TemplateVersion.objects.get(template__key="receipt-email", language="fr")
    api = Api(live_asgi.url, make_service_token("billing", ["notifications:send"]), key)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    screenshot = Path(SCREENSHOTS / "template-version-preview.png")

    with chromium() as browser:
        ann = Staff(browser, live_asgi.url, "ann")
        ben = Staff(browser, live_asgi.url, "ben")

        # Ann writes the first version from the template's page and saves it as a draft.
        ann.page.goto(f"/admin/templates_app/template/{template.pk}/change/")
        ann.click("a:has-text('Write a new version')")
        assert ann.page.input_value("#id_language") == "en"
        ann.page.fill("#id_text", "Hello {{ name }}, this is the first version.")
        ann.click("button[name=_continue]")
        first = ann.version_id()
        assert "draft" in ann.status()
        assert api.live() == [] and api.render() == "no_live_version"

        # ... and submits it.
        ann.click(SUBMIT_LINE)
        assert "pending approval" in ann.status()
        assert "saved and submitted for approval" in ann.messages()
        assert api.live() == []
        # Four eyes: her own version cannot be approved by her, and the page says why.
        approve = ann.page.locator("button[data-review-action=approve]")
        assert approve.is_disabled()
        refusal = ann.page.locator("[data-refusal]").inner_text()
        assert "You cannot approve this version" in refusal
        assert "someone else must approve it" in refusal

        # Ben approves it, with a note: it is live, and the API renders it.
        ben.page.goto(f"/admin/templates_app/templateversion/{first}/change/")
        assert "pending approval" in ben.status()
        ben.page.fill("textarea[name=review_note_input]", "Reads well.")
        ben.click("button[data-review-action=approve]")
        assert "approved" in ben.status() and "live" in ben.status()
        assert "approved: it is live now" in ben.messages()
        assert api.live() == [("en", 1, first)]
        assert api.render() == "Hello Ada, this is the first version."

        # Ann starts the second version from the first, edits it and submits it at once.
        ann.page.goto(f"/admin/templates_app/templateversion/{first}/change/")
        assert "Reads well." in ann.page.locator("#review").inner_text()
        ann.click("a:has-text('New draft')")
        assert ann.page.input_value("#id_text") == "Hello {{ name }}, this is the first version."
        ann.page.fill("#id_text", "Hello {{ name }}, this is the second version.")
        ann.click(SUBMIT_LINE)
        second = ann.version_id()
        assert second != first and "pending approval" in ann.status()
        assert api.live() == [("en", 1, first)]

        ben.page.goto(f"/admin/templates_app/templateversion/{second}/change/")
        ben.click("button[data-review-action=approve]")
        assert "live" in ben.status()
        assert api.live() == [("en", 2, second)]
        assert api.render() == "Hello Ada, this is the second version."

        # The diff between them fits the page.
        ben.page.click("a:has-text('Compare')")
        ben.page.wait_for_selector(".tpl-diff table.diff")
        assert "second" in ben.page.locator(".tpl-diff").inner_text()
        assert ben.fits()

        # Ann rolls back: the first version is live again.
        ann.page.goto(f"/admin/templates_app/templateversion/{first}/change/")
        assert "approved" in ann.status() and "live" not in ann.status()
        ann.click("button[data-review-action=make_live]")
        assert "live again" in ann.messages() and "live" in ann.status()
        assert api.live() == [("en", 1, first)]
        assert api.render() == "Hello Ada, this is the first version."

        # A version page with its preview, as staff see it at 1440 px.
        ann.page.goto(f"/admin/templates_app/templateversion/{email.pk}/change/")
        ann.page.wait_for_selector("iframe.tpl-preview__frame")
        assert ann.fits()
        # A window as tall as the page: the sticky submit row then sits at its bottom, not
        # across the middle of a full-page capture.
        height = ann.page.evaluate("document.documentElement.scrollHeight")
        ann.page.set_viewport_size({"width": 1440, "height": height})
        assert ann.page.locator("[data-preview-subject]").inner_text() == (
            "Votre reçu pour la commande 1042"
        )
        ann.page.screenshot(path=str(screenshot), full_page=True)
        errors = ann.errors + ben.errors

    assert errors == []
    assert screenshot.stat().st_size > 10_000
    versions = {str(v.pk): v for v in TemplateVersion.objects.filter(template=template)}
    assert versions[first].created_by == "staff:ann"
    assert versions[first].approved_by == "staff:ben"
    assert versions[first].review_note == "Reads well."
    assert versions[first].is_live and not versions[second].is_live


@needs_chromium
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_variables_are_added_and_removed_as_rows_by_clicking(live_asgi):
    User.objects.create_superuser("ann", "ann@example.com", STAFF_PASSWORD)
    template = services.template_create(
        actor="staff:ann",
        key=f"browser-variables-{uuid.uuid4().hex[:8]}",
        name="Browser variables",
        category="transactional",
        channel="sms",
        variables=[
            {"name": "name", "type": "string", "example": "Ada"},
            {"name": "old", "type": "string", "required": False},
        ],
    )
    with chromium() as browser:
        ann = Staff(browser, live_asgi.url, "ann")
        ann.page.goto(f"/admin/templates_app/template/{template.pk}/change/")
        assert ann.page.input_value("#id_variables-0-name") == "name"
        # Two rows and a blank one; "Add a variable" (a script under the CSP) adds a fourth.
        ann.page.click("button[data-variables-add]")
        assert ann.page.input_value("[name=variables-TOTAL_FORMS]") == "4"
        ann.page.fill("#id_variables-3-name", "points")
        ann.page.select_option("#id_variables-3-type", "integer")
        ann.page.uncheck("#id_variables-3-required")
        ann.page.fill("#id_variables-3-example", "12")
        ann.page.check("#id_variables-1-delete")
        ann.click("button[name=_continue]")
        assert ann.page.input_value("#id_variables-1-name") == "points"
        errors = ann.errors
    assert errors == []
    template.refresh_from_db()
    assert template.variables == [
        {"name": "name", "type": "string", "required": True, "example": "Ada"},
        {"name": "points", "type": "integer", "required": False, "example": 12},
    ]
