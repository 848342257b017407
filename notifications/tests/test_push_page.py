"""The push page in headless Chromium, served by a real uvicorn process: the service worker
registers and the subscription flow posts a well-formed subscription to ``POST /api/v1/devices``.

Chromium offline cannot reach a push service, so ``pushManager.subscribe`` is stubbed with a key
pair made here (the rest — the service worker, permission, the VAPID key fetch, the API call — is
the real thing). Skipped, saying why, where Debian's ``chromium`` or Playwright is missing.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from communication.models import User
from conftest import chromium, needs_chromium
from notifications.models import Device
from notifications.providers.webpush import b64url

pytestmark = [
    needs_chromium,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

# Replaces PushManager's subscribe/getSubscription with a subscription of the test's own keys and
# records what the page asked for (the applicationServerKey must be the service's VAPID key).
STUB = """
(() => {
  const given = %s;
  const toB64url = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
      .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  window.__subscribeCalls = [];
  PushManager.prototype.getSubscription = async function () { return null; };
  PushManager.prototype.subscribe = async function (options) {
    window.__subscribeCalls.push({
      userVisibleOnly: options.userVisibleOnly,
      applicationServerKey: toB64url(options.applicationServerKey),
    });
    return {
      endpoint: given.endpoint,
      expirationTime: null,
      options: options,
      toJSON() { return {endpoint: given.endpoint, expirationTime: null, keys: given.keys}; },
      unsubscribe: async () => true,
    };
  };
})();
"""


def test_page_registers_the_service_worker_and_posts_the_subscription(live_asgi, make_user_token):
    token = make_user_token("page-user", email="page@example.com")
    browser_key = ec.generate_private_key(ec.SECP256R1())
    subscription = {
        "endpoint": f"https://fcm.googleapis.com/fcm/send/page-{uuid.uuid4().hex}",
        "keys": {
            "p256dh": b64url(
                browser_key.public_key().public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                )
            ),
            "auth": b64url(os.urandom(16)),
        },
    }
    with urllib.request.urlopen(f"{live_asgi.url}/api/v1/push/vapid-public-key") as response:
        vapid_key = json.load(response)["public_key"]

    # Django's ORM refuses to run inside Playwright's event loop: the database is read outside.
    with chromium() as browser:
        context = browser.new_context()
        context.grant_permissions(["notifications"], origin=live_asgi.url)
        context.add_init_script(STUB % json.dumps(subscription))
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{live_asgi.url}/api/v1/push/page#token={token}")
        page.click("#enable")
        # A selector, not wait_for_function: that evaluates a string, which the page's
        # Content-Security-Policy (no 'unsafe-eval') refuses.
        page.wait_for_selector("#push:not([data-state=working])", timeout=30_000)
        state = page.eval_on_selector("#push", "el => el.dataset.state")
        status = page.text_content("#status")
        device = json.loads(page.text_content("#result") or "null")
        workers = page.evaluate(
            """navigator.serviceWorker.getRegistrations().then(regs => regs.map(r => ({
                scope: r.scope,
                script: r.active && r.active.scriptURL,
                state: r.active && r.active.state,
            })))"""
        )
        calls = page.evaluate("window.__subscribeCalls")

    assert state == "registered", (status, errors)
    assert workers == [
        {
            "scope": f"{live_asgi.url}/static/notifications/push/",
            "script": f"{live_asgi.url}/static/notifications/push/sw.js",
            "state": "activated",
        }
    ]
    assert calls == [{"userVisibleOnly": True, "applicationServerKey": vapid_key}]
    row = Device.objects.get(user=User.objects.get(external_id="page-user"))
    assert device["id"] == row.id and device["platform"] == "web"
    assert (row.platform, row.endpoint, row.p256dh, row.auth, row.token) == (
        "web",
        subscription["endpoint"],
        subscription["keys"]["p256dh"],
        subscription["keys"]["auth"],
        "",
    )
    assert row.browser == "chrome" and row.active
