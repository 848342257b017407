"""Whole processes, as a user runs them: ``serve``, ``issue_token``, other ``manage.py`` commands.

Each test here uses its own ``VAR_DIR``, so it starts its own embedded PostgreSQL and Redis and
checks that they are stopped afterwards — nothing may be left running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow

EMBEDDED_VARS = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "EMBEDDED_SERVERS_OWNER",
    "TEST_DATABASE_NAME",
    # serve empties its metrics folder: the one under its own VAR_DIR, not this test run's
    # (which the settings choose by PYTEST_VERSION).
    "PROMETHEUS_MULTIPROC_DIR",
    "PYTEST_VERSION",
)


@pytest.fixture(scope="module")
def var_dir() -> Iterator[Path]:
    # Not under pytest's basetemp: every pytest session resets /tmp/pytest-of-<user> to 0700, and
    # the embedded PostgreSQL (its own system user) then cannot reach its socket there.
    path = Path(tempfile.mkdtemp(prefix="cs-proc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def clean_env(var_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_VARS}
    env["VAR_DIR"] = str(var_dir)
    env.update(extra)
    return env


def manage(var_dir: Path, *args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env or clean_env(var_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def server_pids(var_dir: Path) -> dict[str, int | None]:
    state = var_dir / "embedded"
    out: dict[str, int | None] = {"postgres": None, "redis": None}
    try:
        out["postgres"] = int((state / "postgres" / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        pass
    try:
        out["redis"] = int((state / "redis" / "redis.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    return out


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_using(var_dir: Path) -> list[str]:
    """Live processes whose command line mentions this VAR_DIR (the embedded servers do)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if str(var_dir) in " ".join(proc.info["cmdline"] or []):
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'])[:200]}")
        except psutil.Error:
            continue
    return found


def http(url: str, token: str | None = None):
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None, None


class Serve:
    def __init__(self, var_dir: Path, tmp: Path):
        self.var_dir = var_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = tmp / f"serve-{self.port}.log"
        self.fh = open(self.out, "w")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=ROOT,
            stdout=self.fh,
            stderr=subprocess.STDOUT,
            env=clean_env(var_dir, PORT=str(self.port)),
        )

    def output(self) -> str:
        return self.out.read_text()

    def wait_ready(self) -> dict:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited:\n{self.output()[-4000:]}")
            status, body = http(f"{self.url}/health/ready")
            return body if status == 200 else None

        return wait_for(ready, 90, interval=0.5, what="serve to be ready")

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self, sig=signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(60)
        finally:
            self.fh.close()
        return code


def test_serve_runs_everything_and_leaves_nothing_behind(var_dir, tmp_path):
    serve = Serve(var_dir, tmp_path)
    body = serve.wait_ready()
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    assert body["checks"]["broker"]["ok"]
    output = wait_for(
        lambda: "Press Ctrl-C" in serve.output() and serve.output(), 30, what="the banner"
    )
    assert f"{serve.url}/admin/" in output and f"{serve.url}/api/docs/" in output
    assert "created the development admin 'admin'" in output
    token = re.search(r"development service token.*\n\s+(\S+)", output).group(1)

    # The worker and beat are real children, and their heartbeats reach /health/ready.
    names = " ".join(" ".join(p.cmdline()) for p in serve.children())
    assert "communication.server" in names and " worker " in names and " beat " in names
    # The bulk queue has a worker of its own: a campaign never holds transactional traffic.
    workers = [
        " ".join(p.cmdline()) for p in serve.children() if " worker " in " ".join(p.cmdline())
    ]
    assert any(re.search(r" -Q \S*bulk( |$)", w) for w in workers), workers
    assert any(" -Q " in w and "transactional" in w and "bulk" not in w for w in workers), workers
    wait_for(
        lambda: http(f"{serve.url}/health/ready")[1]["heartbeats"]["worker"]["ok"],
        60,
        what="worker heartbeat",
    )

    # Another manage.py command shares the running servers.
    made = manage(var_dir, "issue_token", "--user", "persisted", "--email", "p@example.com")
    assert made.returncode == 0, made.stderr
    status, me = http(f"{serve.url}/api/v1/me", made.stdout.strip().splitlines()[-1])
    assert (status, me["email"]) == (200, "p@example.com")
    # issue_token's own checks run here too, sharing the servers and the migrated database
    # (each command alone starts and stops the embedded servers).
    issue_token_options_leave_unset_fields_alone(var_dir)

    pids = server_pids(var_dir)
    children = serve.children()
    assert alive(pids["postgres"]) and alive(pids["redis"])
    assert serve.stop(signal.SIGINT) == 0
    _gone, still = psutil.wait_procs(children, timeout=10)
    assert not still, f"children left running: {still}"
    assert not alive(pids["postgres"]) and not alive(pids["redis"])
    assert processes_using(var_dir) == []

    # The metrics the first run's processes wrote are not the second run's: serve empties the
    # folder as it starts.
    first_run = set((var_dir / "prometheus").glob("*.db"))
    assert first_run

    # A second serve finds its data intact; SIGTERM stops it just as cleanly.
    again = Serve(var_dir, tmp_path)
    again.wait_ready()
    assert not first_run & set((var_dir / "prometheus").glob("*.db"))
    assert "created the development admin" not in again.output()
    status, profile = http(f"{again.url}/api/v1/users/persisted", token)
    assert (status, profile["email"]) == (200, "p@example.com")
    pids = server_pids(var_dir)
    assert again.stop(signal.SIGTERM) == 0
    assert not alive(pids["postgres"]) and not alive(pids["redis"])
    assert processes_using(var_dir) == []


def test_a_command_starts_the_servers_and_stops_them_when_done(var_dir):
    result = manage(var_dir, "migrate", "--noinput")
    assert result.returncode == 0, result.stderr
    made = manage(
        var_dir, "issue_token", "--service", "billing", "--scopes", "notifications:send,users:read"
    )
    assert made.returncode == 0, made.stderr
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", made.stdout.strip().splitlines()[-1])
    assert processes_using(var_dir) == []


def issue_token_options_leave_unset_fields_alone(var_dir: Path) -> None:
    """Called by the serve test while serve holds the servers: each option updates its field and
    leaves the others alone, a bad value is refused, and the command refuses to run at all when
    an identity service is configured (tokens then come from it)."""
    env = clean_env(var_dir)
    with ThreadPoolExecutor(3) as pool:
        # Independent of kim's updates: runs beside them.
        identity = pool.submit(
            manage,
            var_dir,
            "issue_token",
            "--user",
            "x",
            env=clean_env(
                var_dir, IDENTITY_JWKS_URL="https://identity.example/.well-known/jwks.json"
            ),
        )
        first = manage(
            var_dir,
            "issue_token",
            "--user",
            "kim",
            "--email",
            "kim@example.com",
            "--phone",
            "+33612345678",
            "--roles",
            "support_agent,admin",
            "--staff",
            env=env,
        )
        assert first.returncode == 0, first.stderr
        second = manage(var_dir, "issue_token", "--user", "kim", "--name", "Kim", env=env)
        assert second.returncode == 0, second.stderr
        # Reading kim back and a refused update are independent: their processes run side by side.
        showing = pool.submit(
            manage,
            var_dir,
            "shell",
            "-c",
            "from communication.models import User; u = User.objects.get(external_id='kim');"
            "print(u.email, u.phone, ','.join(u.roles), u.name, u.is_staff)",
            env=env,
        )
        refusing = pool.submit(
            manage, var_dir, "issue_token", "--user", "kim", "--phone", "12", env=env
        )
        shown, bad, refused = showing.result(), refusing.result(), identity.result()
    assert (
        shown.stdout.strip().splitlines()[-1]
        == "kim@example.com +33612345678 admin,support_agent Kim True"
    )
    assert bad.returncode != 0 and "phone" in bad.stderr
    assert refused.returncode != 0
    assert "identity service" in refused.stderr


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(
    not (
        _reachable("127.0.0.1", 5432)
        and _reachable("127.0.0.1", 6379)
        and _reachable("127.0.0.1", 5672)
    ),
    reason="needs the machine's own PostgreSQL, Redis and RabbitMQ on their standard ports",
)
def test_named_servers_are_used_and_nothing_embedded_starts(tmp_path):
    env = clean_env(
        tmp_path,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
        REDIS_URL="redis://127.0.0.1:6379/15",
        CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//",
    )
    code = (
        "import json; from django.db import connection; from communication import health;"
        "ok, body = health.readiness(); print(json.dumps([connection.settings_dict['HOST'],"
        " ok, body['checks']]))"
    )
    result = manage(tmp_path, "shell", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    host, ok, checks = json.loads(result.stdout.strip().splitlines()[-1])
    assert host == "127.0.0.1" and ok, checks
    assert not (tmp_path / "embedded" / "postgres").exists()
    assert not (tmp_path / "embedded" / "redis").exists()
    assert processes_using(tmp_path) == []
