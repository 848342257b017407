"""Security headers and admin login throttling.

- Every HTML page (admin, API docs, the push page, the unsubscribe page) carries the
  Content-Security-Policy, and works under it in headless Chromium with no violation reported.
- HSTS on HTTPS responses when ``APP_ENV=production`` (behind TLS, ``X-Forwarded-Proto``).
- django-axes locks one username from one IP out after ``AXES_FAILURE_LIMIT`` failed admin logins.

The browser tests skip, saying why, where Debian's ``chromium`` or Playwright is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from communication.models import User
from conftest import ROOT, chromium, needs_chromium
from notifications import unsubscribe
from templates_app.models import TemplateVersion

# Chromium offline cannot reach a push service: subscribe() answers with the given subscription.
STUB = """
PushManager.prototype.getSubscription = async function () { return null; };
PushManager.prototype.subscribe = async function (options) {
  const given = %s;
  return {endpoint: given.endpoint, options, toJSON() { return given; }, unsubscribe: async () => true};
};
"""

PASSWORD = "correct horse battery staple"  # noqa: S105 - the test users' password

# Records every violation the page reports (a blocked inline script or style, a script, image,
# font or worker from elsewhere); console errors catch those reported outside the document.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(
    {directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber}
));
"""


REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def unsubscribe_token() -> str:
    payload = {"d": str(uuid.uuid4()), "c": "marketing", "ch": "email", "a": "x@example.com"}
    return signing.dumps(payload, salt=unsubscribe.SALT, compress=True)


# ------------------------------------------------------------------------------------- headers


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "script_src"),
    [
        # The staff console's Alpine.js evaluates its attributes: /admin/ alone allows eval.
        ("/admin/login/", "'self' 'unsafe-eval'"),
        ("/push", "'self'"),
        ("/api/v1/push/page", "'self'"),
        ("/u/{token}", "'self'"),
        ("/api/docs/", "'self'"),
    ],
)
def test_html_pages_carry_the_content_security_policy(client, path, script_src):
    response = client.get(path.format(token=unsubscribe_token()))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    policy = dict(
        (part.split(" ", 1) + [""])[:2] for part in response["Content-Security-Policy"].split("; ")
    )
    # No inline script anywhere, nothing loaded from another host, no framing.
    assert policy["script-src"] == script_src
    assert policy["default-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert all("http" not in sources and "*" not in sources for sources in policy.values())


def test_hsts_in_production_on_https_only():
    # Settings are read once per process: a production one is a child process (the two URLs keep
    # the settings from starting embedded servers; nothing here connects to them).
    script = """
import django, json
django.setup()
from django.test import Client
client = Client()
https = client.get("/health/live", headers={"X-Forwarded-Proto": "https"})
http = client.get("/health/live")
print(json.dumps([https.get("Strict-Transport-Security"), http.get("Strict-Transport-Security")]))
"""
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": "x" * 50,
        "DATABASE_URL": "postgres://x@127.0.0.1:1/x",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "DJANGO_SETTINGS_MODULE": "communication.settings",
        "LOG_LEVEL": "WARNING",
    }
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    https, http = json.loads(out.stdout.strip().splitlines()[-1])
    assert https == "max-age=31536000"
    assert http is None


@pytest.mark.django_db
def test_no_hsts_in_development(client):
    response = client.get("/health/live", headers={"X-Forwarded-Proto": "https"}, secure=True)
    assert "Strict-Transport-Security" not in response


# ---------------------------------------------------------------------------------- axes, HTTP


def login(client: Client, username: str, password: str, ip: str = "10.0.0.1"):
    client.get(reverse("admin:login"), REMOTE_ADDR=ip)
    return client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=ip,
    )


@pytest.fixture
def staff(db):
    return User.objects.create_superuser("staff", "staff@example.com", PASSWORD)


def test_admin_login_locks_one_username_from_one_ip_after_the_limit(settings, staff):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        assert login(Client(), "staff", "wrong").status_code == 200  # the form again, with an error
    response = login(Client(), "staff", "wrong")
    assert response.status_code == 429
    # Locked: the right password is refused too, from that IP.
    response = login(Client(), "staff", PASSWORD)
    assert response.status_code == 429
    assert b"Account locked" in response.content
    # Another IP, or another username from the same IP, is not locked.
    assert login(Client(), "staff", PASSWORD, ip="10.0.0.2").status_code == 302
    User.objects.create_superuser("other", "other@example.com", PASSWORD)
    assert login(Client(), "other", PASSWORD).status_code == 302


def test_a_successful_login_resets_the_count(settings, staff):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        login(Client(), "staff", "wrong")
    assert login(Client(), "staff", PASSWORD).status_code == 302
    for _ in range(2):
        login(Client(), "staff", "wrong")
    assert login(Client(), "staff", PASSWORD).status_code == 302


# -------------------------------------------------------------------------------- in Chromium


class Watched:
    """A page whose CSP violations and console errors are recorded."""

    def __init__(self, browser, base_url: str, init_script: str = ""):
        self.context = browser.new_context(base_url=base_url)
        self.context.add_init_script(RECORD_VIOLATIONS + init_script)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.console.append(str(exc)))

    def _console(self, message) -> None:
        if message.type == "error":
            self.console.append(message.text)

    def goto(self, path: str):
        response = self.page.goto(path)
        assert response is not None
        assert "'self'" in response.headers["content-security-policy"], path
        return response

    def violations(self) -> list:
        found = self.page.evaluate("window.__violations")
        return found + [m for m in self.console if "Content Security Policy" in m]


@needs_chromium
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_admin_works_under_the_policy(live_asgi):
    User.objects.create_superuser("csp-admin", "csp@example.com", PASSWORD)
    version = TemplateVersion.objects.filter(template__key="welcome-email").first()
    assert version is not None
    with chromium() as browser:
        watched = Watched(browser, live_asgi.url)
        page = watched.page
        watched.goto("/admin/login/?next=/admin/")
        page.fill("#id_username", "csp-admin")
        page.fill("#id_password", PASSWORD)
        page.click("#login-form [type=submit]")
        page.wait_for_url("**/admin/")
        assert page.title().endswith("Communication Service")

        watched.goto("/admin/templates_app/template/")
        assert page.locator("#result_list").is_visible()
        # The changelist's scripts run: selecting a row counts it (the admin's actions.js), and
        # choosing an action shows its Run button (Alpine.js: the console's 'unsafe-eval').
        page.locator("input.action-select").first.check()
        page.locator(".action-counter", has_text="1 of").wait_for()
        page.select_option("select[name=action]", "delete_selected")
        page.locator("button[name=index]", has_text="Run").wait_for()

        # Our change form (its own inline <style>, the admin's form scripts) ...
        watched.goto(f"/admin/templates_app/templateversion/{version.pk}/change/")
        assert page.locator("#templateversion_form").is_visible()
        # ... and a form that saves.
        watched.goto("/admin/communication/user/add/")
        page.fill("#id_username", "added-by-browser")
        page.fill("#id_password1", PASSWORD)
        page.fill("#id_password2", PASSWORD)
        page.click("button[name=_save]")
        page.wait_for_url("**/admin/communication/user/*/change/")
        violations, console = watched.violations(), watched.console
    assert violations == [], console
    assert User.objects.filter(username="added-by-browser").exists()


@needs_chromium
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_admin_login_lockout_in_the_browser(live_asgi, settings):
    User.objects.create_superuser("locked", "locked@example.com", PASSWORD)
    limit = settings.AXES_FAILURE_LIMIT  # the live server runs with the defaults
    statuses = []
    with chromium() as browser:
        watched = Watched(browser, live_asgi.url)
        page = watched.page
        for password in ["wrong"] * limit + [PASSWORD]:
            watched.goto("/admin/login/?next=/admin/")
            page.fill("#id_username", "locked")
            page.fill("#id_password", password)
            with page.expect_navigation() as navigation:
                page.click("#login-form [type=submit]")
            statuses.append(navigation.value.status)
        content = page.content()
        violations = watched.violations()
    assert statuses == [200] * (limit - 1) + [429, 429]
    assert "Account locked" in content
    assert violations == []


@needs_chromium
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_push_and_unsubscribe_pages_work_under_the_policy(live_asgi, make_user_token):
    token = make_user_token("csp-page-user")
    subscription = {
        "endpoint": f"https://fcm.googleapis.com/fcm/send/csp-{uuid.uuid4().hex}",
        "keys": {"p256dh": "BAAA", "auth": "AAAA"},
    }
    with chromium() as browser:
        watched = Watched(browser, live_asgi.url, STUB % json.dumps(subscription))
        watched.context.grant_permissions(["notifications"], origin=live_asgi.url)
        page = watched.page
        watched.goto(f"/push#token={token}")
        page.click("#enable")
        page.wait_for_selector("#push:not([data-state=working])")
        status = page.text_content("#status")
        # The service worker registered and the page's call reached the API (which refuses the
        # made-up keys: what matters here is that nothing was blocked on the way).
        registrations = page.evaluate(
            "navigator.serviceWorker.getRegistrations().then(regs => regs.length)"
        )
        push_violations = watched.violations()

        watched.goto(f"/u/{unsubscribe_token()}")
        # The page's inline stylesheet applies (a column of 32rem).
        max_width = page.eval_on_selector("body", "b => getComputedStyle(b).maxWidth")
        unsubscribe_violations = watched.violations()
    assert registrations == 1, status
    assert push_violations == []
    assert max_width == "512px"
    assert unsubscribe_violations == []


@needs_chromium
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_api_docs_work_under_the_policy_without_another_host(live_asgi):
    elsewhere: list[str] = []
    with chromium() as browser:
        watched = Watched(browser, live_asgi.url)
        page = watched.page
        page.on("request", lambda request: elsewhere.append(request.url))
        watched.goto("/api/docs/")
        page.wait_for_selector(".opblock", timeout=30_000)
        operations = page.locator(".opblock").count()
        watched.goto("/api/redoc/")
        page.wait_for_selector("[data-section-id]", timeout=30_000)
        sections = page.locator("[data-section-id]").count()
        violations, console = watched.violations(), watched.console
    assert operations > 10 and sections > 10
    # ReDoc's bundle shows a logo from its CDN in the sidebar, unconditionally: the policy blocks
    # it (no request leaves) and the bundle drops the image. Anything else is a bug.
    violations = [v for v in violations if REDOC_LOGO not in str(v)]
    assert violations == [], console
    # The logo's request is the one the policy blocks in the browser (see above).
    assert [
        url
        for url in elsewhere
        if not url.startswith((live_asgi.url, "data:", "blob:")) and url != REDOC_LOGO
    ] == []
