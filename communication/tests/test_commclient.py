"""``commclient.js`` in headless Chromium against a real uvicorn process, under the service's
Content-Security-Policy: the test opens ``/push`` and imports the module with a dynamic
``import()`` (a script of the service's own origin, which the policy allows).

The browser reaches the shared live server through the root conftest's TCP proxy (``tcp_proxy``),
which the tests use to cut sockets, to park new connections (the service is "down"), to swallow
traffic (a dead socket that never closes) and to hold a reconnected socket's first frames (so
that a live event and the replay of a ``resume`` overlap for real). No hook in the service.
"""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from communication.models import RealtimeEvent, User
from conftest import chromium, needs_chromium
from messaging.models import Message

pytestmark = [
    needs_chromium,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

MODULE = "/static/commclient/commclient.js"


# Loads the module, makes `window.client` and records what its listeners see.
SETUP = """async ([token, options]) => {
  const { CommClient, CommError } = await import("MODULE");
  window.CommError = CommError;
  const client = window.client = new CommClient({ token, ...options });
  window.seen = []; window.states = []; window.readies = []; window.resyncs = 0;
  window.errors = [];
  client.on("*", (e) => { if (e.seq !== undefined) seen.push([e.seq, e.type, e.data]); });
  client.on("state", (s) => states.push(s.state));
  client.on("ready", (r) => readies.push(r.seq));
  client.on("resync", () => { resyncs += 1; });
  client.on("error", (e) => errors.push(e.code));
  client.connect();
}""".replace("MODULE", MODULE)


def until(page, condition: str, timeout_ms: int = 10_000):
    """Awaits a condition inside the page (wait_for_function compiles a string, which the
    policy's script-src refuses)."""
    page.evaluate(
        """([timeout, what]) => new Promise((ok, fail) => {
          const started = Date.now();
          const check = () => (CONDITION) ? ok() : Date.now() - started > timeout
            ? fail(new Error("timed out: " + what)) : setTimeout(check, 15);
          check();
        })""".replace("CONDITION", condition),
        [timeout_ms, condition],
    )


def open_page(browser, proxy):
    page = browser.new_context().new_page()
    console: list[str] = []
    page.on(
        "console",
        lambda m: (
            console.append(f"{m.text} {m.location.get('url')}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda exc: console.append(str(exc)))
    response = page.goto(f"{proxy.origin}/push")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    frames: list[dict] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))),
    )
    return page, console, frames


def unexpected(console: list[str]) -> list[str]:
    """Console errors, less the browser's own favicon request (the service has none) and the
    404 a test asks for on purpose."""
    return [c for c in console if not c.endswith(("/favicon.ico", MISSING))]


MISSING = "/api/v1/conversations/00000000-0000-0000-0000-000000000000"


def in_thread(fn):
    """Runs ORM work outside Playwright's loop (inside a chromium() block)."""

    def run():
        try:
            return fn()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def notify(make_service_token, tcp_proxy):
    """A service's API call, over HTTP (the ORM is off limits inside a chromium() block)."""
    token = make_service_token("billing")

    def send(user_id: str, title: str) -> None:
        body = {
            "recipients": [{"user_id": user_id}],
            "category": "alerts",
            "channels": ["in_app"],
            "content": {"title": title, "body": "body"},
        }
        request = urllib.request.Request(
            f"{tcp_proxy.server_url}/api/v1/notifications",  # not through the proxy, which may be down
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request) as response:
            assert response.status == 202

    return send


def conversation_of(token: str, other: str) -> str:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.post(
        "/api/v1/conversations", {"type": "direct", "participants": [other]}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_live_events_rest_calls_and_sends(tcp_proxy, notify, make_user_token):
    token = make_user_token("cc-one")
    make_user_token("cc-peer")
    conversation = conversation_of(token, "cc-peer")
    with chromium() as browser:
        page, console, _ = open_page(browser, tcp_proxy)
        page.evaluate(SETUP, [token, {}])
        until(page, "readies.length === 1 && client.state === 'open'")
        notify("cc-one", "Hello")
        until(page, "seen.length === 1")
        event = page.evaluate("seen[0]")
        assert event[:2] == [1, "notification.created"] and event[2]["title"] == "Hello"
        rest = page.evaluate(
            """async (missingId) => {
              const count = await client.notifications.unreadCount();
              const page = await client.notifications.list({ limit: 10 });
              await client.notifications.markRead([page.results[0].id]);
              const prefs = await client.preferences.get();
              let missing;
              try { await client.conversations.get(missingId); }
              catch (e) { missing = [e instanceof CommError, e.status, e.code]; }
              return { count, listed: page.results.length, prefs: "categories" in prefs, missing };
            }""",
            MISSING.rsplit("/", 1)[1],
        )
        assert rest == {"count": 1, "listed": 1, "prefs": True, "missing": [True, 404, "not_found"]}
        until(page, "seen.length === 2")
        assert page.evaluate("seen[1][1]") == "notification.read"

        ack = page.evaluate(
            f"client.send({json.dumps(conversation)}, {{ content: 'over the socket' }})"
        )
        assert ack["type"] == "message.ack" and ack["replay"] is False
        until(page, "seen.length === 3")
        assert page.evaluate("seen[2][1]") == "message.created"
        page.evaluate("client.close()")
        assert page.evaluate("client.state") == "closed"
        sent = page.evaluate(
            f"client.send({json.dumps(conversation)}, {{ content: 'through REST' }})"
        )
        assert sent["content"] == "through REST" and sent["id"] != ack["id"]

        # A refused token: closed for good, no reconnect.
        page.evaluate(SETUP, ["not-a-token", {"backoff": {"initial": 10, "max": 20}}])
        until(page, "client.state === 'closed' && errors.length > 0")
        assert page.evaluate("[states, errors]") == [["connecting", "closed"], ["token_invalid"]]
    assert unexpected(console) == []


def test_reconnect_resume_and_deduplication(tcp_proxy, notify, make_user_token):
    token = make_user_token("cc-two")
    options = {"backoff": {"initial": 50, "max": 200}}
    with chromium() as browser:
        page, console, frames = open_page(browser, tcp_proxy)
        page.evaluate(SETUP, [token, options])
        until(page, "readies.length === 1")
        notify("cc-two", "n1")
        until(page, "seen.length === 1")

        # The socket drops; the service is unreachable while two notifications are sent.
        tcp_proxy.up.clear()
        tcp_proxy.cut()
        until(page, "client.state === 'reconnecting'")
        notify("cc-two", "n2")
        notify("cc-two", "n3")
        tcp_proxy.up.set()
        until(page, "seen.length === 3")
        assert page.evaluate("readies") == [0, 3]

        # Again, and this time the reconnected socket's resume waits in the proxy until a live
        # event has arrived: the replay then carries that event a second time.
        tcp_proxy.up.clear()
        tcp_proxy.cut()
        until(page, "client.state === 'reconnecting'")
        notify("cc-two", "n4")
        tcp_proxy.released.clear()
        tcp_proxy.hold_next_upgrade = True
        tcp_proxy.up.set()
        until(page, "readies.length === 3")
        notify("cc-two", "n5")
        for _ in range(500):  # the live event has reached the browser, ahead of the replay
            if any(f.get("seq") == 5 for f in frames):
                break
            page.wait_for_timeout(15)
        tcp_proxy.released.set()
        until(page, "seen.length === 5")
        page.wait_for_timeout(200)  # room for a duplicate to show, if one got through
        seen = page.evaluate("seen.map(([seq, type, data]) => [seq, data.title])")
        states = page.evaluate("states")
    assert seen == [[1, "n1"], [2, "n2"], [3, "n3"], [4, "n4"], [5, "n5"]]
    assert [f["seq"] for f in frames if f.get("seq") == 5] == [5, 5], "sent twice on the wire"
    assert states[:4] == ["connecting", "open", "reconnecting", "open"]
    assert unexpected(console) == []


def test_dead_socket_resync_and_resend(tcp_proxy, notify, make_user_token):
    token = make_user_token("cc-three")
    make_user_token("cc-peer3")
    conversation = conversation_of(token, "cc-peer3")
    user = User.objects.get(external_id="cc-three")
    options = {"pingInterval": 200, "backoff": {"initial": 50, "max": 200}}
    with chromium() as browser:
        page, console, _ = open_page(browser, tcp_proxy)
        page.evaluate(SETUP, [token, options])
        until(page, "readies.length === 1")
        notify("cc-three", "n1")
        until(page, "seen.length === 1")

        # The socket goes silent without closing; a send made now is swallowed.
        tcp_proxy.up.clear()
        tcp_proxy.frozen = True
        page.evaluate(
            """(id) => {
              client.send(id, { content: "lost then resent", clientId: "resend-1" })
                .then((ack) => { window.acked = ack; });
            }""",
            conversation,
        )
        until(page, "client.state === 'reconnecting'")  # no pong: dropped
        notify("cc-three", "n2")
        # Retention pruning while the client is away: its resume can no longer be served.
        in_thread(lambda: RealtimeEvent.objects.filter(user=user).delete())
        tcp_proxy.cut()
        tcp_proxy.up.set()
        until(page, "resyncs === 1 && window.acked !== undefined")
        notify("cc-three", "n3")
        until(page, "seen.length === 3")
        seen = page.evaluate("seen.map(([seq, type]) => [seq, type])")
        acked = page.evaluate("acked")
    assert seen == [
        [1, "notification.created"],
        [3, "message.created"],
        [4, "notification.created"],
    ]
    assert acked["client_id"] == "resend-1"
    assert Message.objects.filter(client_id="resend-1").count() == 1
    assert unexpected(console) == []
