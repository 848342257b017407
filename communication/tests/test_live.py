"""Against real processes: a uvicorn server (HTTP, websockets) and a Celery worker."""

from __future__ import annotations

import json
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from communication import heartbeat
from communication.tasks import heartbeat_roundtrip
from conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def http_get(url: str, token: str | None = None):
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_api_over_a_real_server(live_asgi, make_user_token):
    token = make_user_token("live-alice", email="live@example.com")
    status, body = http_get(f"{live_asgi.url}/api/v1/me", token)
    assert status == 200
    assert body["email"] == "live@example.com"
    status, body = http_get(f"{live_asgi.url}/api/v1/me")
    assert (status, body["code"]) == (401, "token_missing")


def test_websocket_authenticates_with_a_query_token(live_asgi, make_user_token):
    token = make_user_token("ws-user")
    with connect(f"{live_asgi.ws_url}/ws/v1/?token={token}") as ws:
        assert json.loads(ws.recv(timeout=10))["user_id"] == "ws-user"
        ws.send(json.dumps({"type": "ping", "id": 7}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong", "id": 7}


def test_websocket_authenticates_with_a_first_message(live_asgi, make_user_token):
    token = make_user_token("ws-user2")
    with connect(f"{live_asgi.ws_url}/ws/v1/") as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=10))["code"] == "token_missing"
        ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"


def test_websocket_refuses_a_bad_token(live_asgi, make_user_token):
    with connect(f"{live_asgi.ws_url}/ws/v1/?token={make_user_token('x', ttl=-600)}") as ws:
        assert json.loads(ws.recv(timeout=10))["code"] == "token_expired"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 4401


def test_websocket_refuses_a_foreign_origin(live_asgi, make_user_token):
    token = make_user_token("ws-user3")
    with pytest.raises(Exception) as refused:  # the handshake itself is refused (403)
        with connect(
            f"{live_asgi.ws_url}/ws/v1/?token={token}", origin="https://evil.example"
        ) as ws:
            ws.recv(timeout=5)
    assert "403" in str(refused.value)


def test_tokens_never_reach_the_log(live_asgi, make_user_token):
    token = make_user_token("log-user")
    before = len(live_asgi.log.read_text())
    http_get(f"{live_asgi.url}/api/v1/me?token={token}", token)
    http_get(f"{live_asgi.url}/api/v1/me", token + "tampered")
    with connect(f"{live_asgi.ws_url}/ws/v1/?token={token}") as ws:
        ws.recv(timeout=10)

    def logged() -> str | None:
        # Both requests' access lines and the socket's handshake line: the lines that could
        # carry the token are all written before it is looked for.
        text = live_asgi.log.read_text()
        ours = text[before:]
        me = ours.count('"path": "/api/v1/me"')
        return text if me >= 2 and "WebSocket /ws/v1/" in ours else None

    text = wait_for(logged, 10, interval=0.05, what="the server's log lines")
    signature = token.rsplit(".", 1)[1]
    assert token not in text and signature not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("path") == "/api/v1/me"]
    assert access and all(len(line["request_id"]) == 32 for line in access)


def test_celery_worker_runs_a_task(celery_worker):
    client = heartbeat._client()
    client.delete("heartbeat:roundtrip:celery")
    heartbeat_roundtrip.apply_async(queue="default")
    wait_for(lambda: client.get("heartbeat:roundtrip:celery"), 30, what="the task to run")
    assert heartbeat.ages(client)["worker"]["ok"]


def test_bad_json_is_answered_and_the_socket_stays_open(live_asgi, make_user_token):
    with connect(f"{live_asgi.ws_url}/ws/v1/?token={make_user_token('ws-json')}") as ws:
        ws.recv(timeout=10)
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=10))["code"] == "validation_error"
        ws.send(json.dumps({"type": "nope"}))
        assert json.loads(ws.recv(timeout=10))["code"] == "validation_error"
        ws.send(json.dumps({"type": "ping", "id": 3}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong", "id": 3}


def test_websocket_accepts_an_allowed_origin(live_asgi, make_user_token):
    # The server runs with the default PUBLIC_BASE_URL, which is always an allowed origin.
    with connect(
        f"{live_asgi.ws_url}/ws/v1/?token={make_user_token('ws-origin')}",
        origin="http://127.0.0.1:8000",
    ) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
    # A page the service serves itself (/app/) connects from its own origin, whatever the port.
    with connect(
        f"{live_asgi.ws_url}/ws/v1/?token={make_user_token('ws-origin')}", origin=live_asgi.url
    ) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
