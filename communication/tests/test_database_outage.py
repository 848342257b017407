"""A web process whose PostgreSQL is unreachable answers ``503 unavailable`` with
``Retry-After`` at once (API and console), ``/health/ready`` answers 503 within its own timeout
and ``/health/live`` stays 200. Recovery under load: ``tests/faults/test_database_outage.py``."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import free_port, wait_for
from tests.faults.harness import FaultProxy, database_target, database_url_through

pytestmark = pytest.mark.slow


def get(url: str, method: str = "GET", headers: dict | None = None, data: bytes | None = None):
    """``(status, headers, body, seconds)`` of one request."""
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read(), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read(), time.monotonic() - started


@pytest.fixture(scope="module")
def server(start_live_asgi):
    """A web process whose database is a port nothing listens on."""
    return start_live_asgi({"DATABASE_URL": f"postgres://root@127.0.0.1:{free_port()}/gone"})


def test_api_answers_503_unavailable_with_retry_after(server, make_service_token):
    auth = {"Authorization": f"Bearer {make_service_token()}", "Content-Type": "application/json"}
    send = b'{"recipients": [{"email": "a@example.com"}], "category": "alerts", "content": {"body": "b"}}'
    answers = [get(f"{server.url}/api/v1/notifications", "POST", auth, send) for _ in range(5)]
    answers.append(get(f"{server.url}/api/v1/notifications/requests/{uuid.uuid4()}", "GET", auth))
    for status, headers, body, seconds in answers:
        assert status == 503, body
        assert b'"code": "unavailable"' in body or b'"code":"unavailable"' in body
        assert headers["Retry-After"] == "2" and b'"retry_after"' in body
        # The pool's own wait (DB_POOL_TIMEOUT) is 10 s; the first request learns of the outage
        # when the pool's connection attempt fails, the others are refused at once.
        assert seconds < 5


def test_console_page_is_a_503_page(server):
    # A session cookie makes the page read the session table.
    status, headers, body, _ = get(
        f"{server.url}/admin/", headers={"Cookie": "sessionid=" + "x" * 32}
    )
    assert status == 503, body
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Retry-After"] == "2"
    assert b"Temporarily unavailable" in body


def test_ready_is_503_within_its_timeout_and_live_stays_200(server):
    status, _, body, seconds = get(f"{server.url}/health/ready")
    assert status == 503 and b'"database"' in body
    assert seconds < 5
    assert get(f"{server.url}/health/live")[0] == 200


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for s in held:
        s.close()


@pytest.mark.django_db
def test_ready_answers_within_its_timeout_when_a_check_hangs(client, settings, silent_server):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent_server}/0"
    settings.HEALTH_CHECK_TIMEOUT = 0.5
    client.get("/health/live")  # the first request of a run loads the URLconf: not timed
    started = time.monotonic()
    response = client.get("/health/ready")
    assert time.monotonic() - started < 1.5
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"] == {
        "ok": False,
        "error": "no answer in 0.5s",
        "latency_ms": 500,
    }
    assert body["checks"]["database"]["ok"] is True


@pytest.fixture
def db_proxy():
    proxy = FaultProxy(database_target())
    yield proxy
    proxy.close()


def frame(ws) -> dict:
    return json.loads(ws.recv(timeout=15))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_websocket_answers_unavailable_and_keeps_the_socket(
    db_proxy, start_live_asgi, make_user_token
):
    server = start_live_asgi({"DATABASE_URL": database_url_through(db_proxy)})
    token = make_user_token("ws-outage")
    send = {"type": "message.send", "conversation_id": str(uuid.uuid4()), "content": "hi"}
    with connect(f"{server.ws_url}/ws/v1/?token={token}") as ws:
        assert frame(ws)["type"] == "ready"
        db_proxy.down()
        ws.send(json.dumps({"type": "resume", "after_seq": 0}))  # through Django's ORM
        event = frame(ws)
        assert (event["type"], event["code"], event["retry_after"]) == ("error", "unavailable", 2)
        ws.send(json.dumps({**send, "client_id": "c0"}))  # through communication.adb
        assert frame(ws)["code"] == "unavailable"
        with connect(f"{server.ws_url}/ws/v1/?token={token}") as late:
            # Signing in reads the user: refused, the client told to come back later.
            assert frame(late)["code"] == "unavailable"
            with pytest.raises(ConnectionClosed) as closed:
                late.recv(timeout=15)
            assert closed.value.rcvd.code == 1013

        db_proxy.up()
        attempts = iter(range(100))

        def answered() -> bool:
            ws.send(json.dumps({**send, "client_id": f"c{next(attempts) + 1}"}))
            return frame(ws)["code"] != "unavailable"

        wait_for(answered, 20, interval=0.5, what="the socket's sends reaching the database")
