"""Fixtures every app's tests share.

- ``user_client`` / ``service_client``: DRF clients carrying real signed JWTs.
- ``make_user_token`` / ``make_service_token``: tokens with chosen claims.
- ``identity_provider``: a local HTTP server playing the identity service (JWKS, token, users),
  with its own key pair, installed as ``IDENTITY_*`` settings.
- ``celery_worker``: a real Celery worker process on the real broker, against the test database.
- ``live_asgi``: a real uvicorn process serving ``communication.asgi`` (HTTP and websockets);
  ``start_live_asgi`` starts more with an environment of their own.
- ``tcp_proxy``: a TCP proxy in front of ``live_asgi`` that a browser test cuts or stalls.
- ``httpserver`` (pytest-httpserver): a local server standing in for any external API.

Every test gets its own cache key prefix, so circuit breakers, JWKS and identity caches never leak
from one test to the next. HTTP rate limits are off (``RATE_LIMITS=off``) unless a test sets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection, transaction
from rest_framework.test import APIClient

from communication.processes import server_argv, worker_argv

ROOT = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------- browser

# Debian's chromium (Playwright's own browser download does not work offline); page tests skip,
# saying why, where it or the playwright package is missing.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) or shutil.which(CHROMIUM) is None or sync_playwright is None,
    reason=f"{CHROMIUM} or the playwright package is missing (apt-get install chromium; "
    ".ci/run does)",
)


class _SharedChromium:
    """One Playwright driver and one Chromium for the whole run: starting them costs about a second
    and a half, once per page test otherwise. Each test works in browser contexts of its own
    (cookies, storage, permissions), closed when its ``chromium()`` block ends.

    Playwright's sync API keeps its event loop marked as running in this thread between calls,
    and Django's ORM refuses to run in a thread with a running loop: the mark is set only inside
    a ``chromium()`` block (no Playwright call happens outside one) and cleared outside it."""

    playwright = None
    browser = None
    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def enter(cls):
        if cls.loop is not None:
            asyncio.events._set_running_loop(cls.loop)
        if cls.browser is None or not cls.browser.is_connected():
            if cls.playwright is None:
                cls.playwright = sync_playwright().start()
                cls.loop = asyncio.events._get_running_loop()
            cls.browser = cls.playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        return cls.browser

    @classmethod
    def leave(cls) -> None:
        try:
            if cls.browser is not None and cls.browser.is_connected():
                for context in cls.browser.contexts:
                    context.close()
        finally:
            asyncio.events._set_running_loop(None)

    @classmethod
    def stop(cls) -> None:
        if cls.playwright is None:
            return
        asyncio.events._set_running_loop(cls.loop)
        try:
            if cls.browser is not None and cls.browser.is_connected():
                cls.browser.close()
        finally:
            cls.playwright.stop()  # ends the loop, which clears the mark
            cls.playwright = cls.browser = cls.loop = None


@contextlib.contextmanager
def chromium():
    """Headless Chromium (shared by the run's page tests, see ``_SharedChromium``). Django's ORM
    refuses to run inside Playwright's event loop: tests touch the database before and after this
    block, never inside."""
    try:
        yield _SharedChromium.enter()
    finally:
        _SharedChromium.leave()


# The staff console in the browser: the password of the staff members tests create, and where
# the screenshots a person looks at before a release are kept (git-ignored).
STAFF_PASSWORD = "correct horse battery staple"
SCREENSHOTS = ROOT / "var" / "screenshots"


class StaffBrowser:
    """One staff member signed in to the console in a browser context of their own, 1440 px
    wide. JavaScript errors and uncaught exceptions on its pages are kept in ``errors``;
    confirmation dialogs are accepted, as staff who click a button mean it."""

    def __init__(
        self, browser, base_url: str, username: str, password: str = STAFF_PASSWORD, height=900
    ):
        self.context = browser.new_context(
            base_url=base_url, viewport={"width": 1440, "height": height}
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else 0)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.page.goto("/admin/login/?next=/admin/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        self.page.click("#login-form [type=submit]")
        self.page.wait_for_url("**/admin/")

    def goto(self, path: str):
        """Opens a page of the console, which must answer 200."""
        response = self.page.goto(path)
        assert response is not None and response.status == 200, path
        return response

    def fits(self) -> bool:
        """Nothing wider than the window."""
        return self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def pytest_collection_modifyitems(config, items):
    """Refuses a transactional test without ``serialized_rollback``: its flush leaves neither the
    seeded categories nor the content types as the next serialized test restores them, and every
    live-server test after it then fails at setup, far from the cause."""
    bare = [
        item.nodeid
        for item in items
        for marker in item.iter_markers("django_db")
        if marker.kwargs.get("transaction") and not marker.kwargs.get("serialized_rollback")
    ]
    if bare:
        raise pytest.UsageError(
            "transactional tests need serialized_rollback=True: " + ", ".join(sorted(set(bare)))
        )


def pytest_sessionfinish(session, exitstatus):
    _SharedChromium.stop()


def pytest_unconfigure(config):
    """Removes this run's Prometheus folder (the settings give each run its own,
    ``var/prometheus/pytest-<pid>``) and those of runs that died before removing theirs."""
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""))
    if folder.name != f"pytest-{os.getpid()}":
        return
    for run in folder.parent.glob("pytest-*"):
        pid = run.name.removeprefix("pytest-")
        if run == folder or (pid.isdigit() and not Path(f"/proc/{pid}").exists()):
            shutil.rmtree(run, ignore_errors=True)


# The suite runs without HTTP rate limits, in this process (below) and in the servers and workers
# it starts (they inherit this environment); the limiter's own tests turn them on.
os.environ["RATE_LIMITS"] = "off"


class FewRoundsPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2 as in production, with few rounds: the production count costs a quarter to half a
    second per password set or checked, and the suite sets and checks a few hundred. A hash
    names its rounds, so the live servers (production hashers) still check these."""

    iterations = 1000


@pytest.fixture(scope="session", autouse=True)
def _few_rounds_password_hashing(django_test_environment):
    from django.conf import settings
    from django.contrib.auth import hashers

    settings.PASSWORD_HASHERS = ["conftest.FewRoundsPBKDF2PasswordHasher"]
    hashers.get_hashers.cache_clear()
    hashers.get_hashers_by_algorithm.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def _flush_written_tables_only(django_test_environment):
    """A transactional test's flush truncates the tables that hold rows (and, by CASCADE, those
    that reference them), not every table: truncating them all, partitions included, was most of
    such a test's teardown, spent on tables it never wrote."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    every = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        tables = list(tables)
        if tables and not reset_sequences:
            # Django's own table names, quoted as the flush quotes them.
            exists = "SELECT {} WHERE EXISTS (SELECT FROM {})"
            written = " UNION ALL ".join(
                exists.format(i, self.quote_name(table)) for i, table in enumerate(tables)
            )
            with self.connection.cursor() as cursor:
                cursor.execute(written)
                tables = [tables[i] for (i,) in cursor.fetchall()]
            allow_cascade = True
        return every(
            self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )

    DatabaseOperations.sql_flush = sql_flush
    yield
    DatabaseOperations.sql_flush = every


@pytest.fixture(autouse=True)
def _rate_limits_off(settings):
    settings.RATE_LIMITS = "off"


@pytest.fixture(autouse=True)
def _send_backlog_read_rarely(settings):
    """The send API's admission figure is read once per process per
    ``SEND_BACKLOG_REFRESH_SECONDS``, not per request: per-request query budgets leave that read
    out (a test of admission sets its own interval)."""
    settings.SEND_BACKLOG_REFRESH_SECONDS = 3600


@pytest.fixture(autouse=True)
def _isolated_cache(settings):
    caches = {k: dict(v) for k, v in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"t-{uuid.uuid4().hex[:12]}"
    settings.CACHES = caches
    from communication.auth import keys

    keys.jwks_client.reset()
    yield
    keys.jwks_client.reset()


@pytest.fixture(autouse=True)
def _settle_other_processes(request):
    """Before a transactional test's tables are truncated, waits until the other processes (the
    live server finishing a socket's disconnect, a worker finishing a task) have no transaction
    open on the test database: TRUNCATE racing one of them can deadlock."""
    marker = request.node.get_closest_marker("django_db")
    yield
    if not marker or not marker.kwargs.get("transaction"):
        return
    from django.db import connection

    def quiet():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
            )
            return cursor.fetchone()[0] == 0

    # Quiet for 0.3 s in a row: a socket closed by the test's last line is still being handled by
    # the server (its disconnect hooks write presence) a few milliseconds later.
    deadline = time.monotonic() + 10
    quiet_since = None
    while time.monotonic() < deadline:
        if quiet():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 0.3:
                break
        else:
            quiet_since = None
        time.sleep(0.03)


# ------------------------------------------------------------------------------------------ tokens


@pytest.fixture
def make_user_token(db):
    from communication import services
    from communication.auth import tokens

    def make(external_id: str = "alice", *, ttl: int = 3600, **profile):
        user = services.user_update_local(external_id=external_id, **profile)
        return tokens.issue_user_token(user, ttl=ttl)

    return make


@pytest.fixture
def make_service_token():
    from communication.auth import tokens

    def make(client_id: str = "billing", scopes=("notifications:send",), *, ttl: int = 3600):
        return tokens.issue_service_token(client_id, list(scopes), ttl=ttl)

    return make


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def user_client(make_user_token):
    """A client authenticated as alice (``make_client`` for others)."""
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_user_token('alice', email='alice@example.com')}"
    )
    return client


@pytest.fixture
def service_client(make_service_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token()}")
    return client


# ------------------------------------------------------------------------------- identity service


@functools.lru_cache(maxsize=1)
def _identity_provider_key():
    """The stand-in identity service's first signing key: generated once per run (an RSA key
    takes a noticeable part of a second), never the service's own development key."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class IdentityProvider:
    """A stand-in identity service on a local HTTP server, signing with a key pair of its own."""

    ISSUER = "https://identity.test"
    AUDIENCE = "communication-tests"

    def __init__(self, httpserver):
        self.server = httpserver
        self.keys: list = []
        self.users: dict[str, dict] = {}
        self.jwks_hits = 0
        self.user_hits = 0
        self.down = False
        self.rotate(_identity_provider_key())
        httpserver.expect_request("/.well-known/jwks.json").respond_with_handler(self._jwks)
        httpserver.expect_request("/oauth/token", method="POST").respond_with_json(
            {"access_token": "client-token", "token_type": "Bearer", "expires_in": 3600}
        )
        httpserver.expect_request(__import__("re").compile(r"^/users/.+$")).respond_with_handler(
            self._user
        )

    @property
    def jwks_url(self) -> str:
        return self.server.url_for("/.well-known/jwks.json")

    def rotate(self, key) -> None:
        """Adds ``key`` as the current signing key (older ones stay published)."""
        self.keys.append(key)

    def drop_old_keys(self) -> None:
        self.keys = self.keys[-1:]

    def jwk(self, key) -> dict:
        from communication.auth.keys import rsa_public_jwk

        return rsa_public_jwk(key.public_key())

    def _jwks(self, request):
        from werkzeug import Response

        self.jwks_hits += 1
        import json

        return Response(
            json.dumps({"keys": [self.jwk(k) for k in self.keys]}), content_type="application/json"
        )

    def _user(self, request):
        import json

        from werkzeug import Response

        self.user_hits += 1
        if self.down:
            return Response("unavailable", status=503)
        if request.headers.get("Authorization") != "Bearer client-token":
            return Response("no token", status=401)
        sub = request.path.rsplit("/", 1)[1]
        if sub not in self.users:
            return Response(json.dumps({"detail": "not found"}), status=404)
        return Response(json.dumps(self.users[sub]), content_type="application/json")

    def token(
        self,
        sub: str = "alice",
        *,
        key=None,
        headers=None,
        exp_in: int = 300,
        algorithm: str = "RS256",
        **claims,
    ) -> str:
        import jwt

        key = key or self.keys[-1]
        now = int(time.time())
        payload = {
            "sub": sub,
            "iss": self.ISSUER,
            "aud": self.AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + exp_in,
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        hdr = {"kid": self.jwk(key)["kid"], **(headers or {})}
        return jwt.encode(payload, key, algorithm=algorithm, headers=hdr)


@pytest.fixture
def identity_provider(httpserver, settings):
    provider = IdentityProvider(httpserver)
    settings.IDENTITY_JWKS_URL = provider.jwks_url
    settings.IDENTITY_ISSUER = provider.ISSUER
    settings.IDENTITY_AUDIENCE = provider.AUDIENCE
    settings.IDENTITY_API_URL = httpserver.url_for("").rstrip("/")
    settings.IDENTITY_TOKEN_URL = httpserver.url_for("/oauth/token")
    settings.IDENTITY_CLIENT_ID = "communication"
    settings.IDENTITY_CLIENT_SECRET = "s3cret"
    settings.IDENTITY_RETRIES = 1
    return provider


# --------------------------------------------------------------------------- real processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _test_db_url() -> str:
    s = connection.settings_dict
    # django-environ keeps a socket folder given as ?host= in OPTIONS.
    host = s.get("HOST") or s.get("OPTIONS", {}).get("host") or ""
    port = f":{s['PORT']}" if s.get("PORT") else ""
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    if host.startswith("/"):
        return f"postgres://{auth}@/{s['NAME']}?host={host}"
    return f"postgres://{auth}@{host}{port}/{s['NAME']}"


def process_env(**extra) -> dict:
    """The environment for a child process that must see the test database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = _test_db_url()
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    _stop_all([proc], timeout)


def _stop_all(procs: list[subprocess.Popen], timeout: float = 20) -> None:
    """SIGTERM to each, then waits for each (a worker's warm shutdown takes a second or two: they
    shut down side by side); one still running after ``timeout`` is killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Worker:
    """A real Celery worker process (solo pool) on the real broker, against the test database."""

    def __init__(
        self, log: Path, env: dict, prefix: str = "", pool: str = "solo", concurrency: int = 1
    ):
        self.log = log
        self.prefix = prefix
        queues = ",".join(f"{prefix}{q}" for q in ("realtime", "transactional", "bulk", "default"))
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(
                worker_argv(
                    queues=queues,
                    name=f"test-{prefix or 'main'}-{os.getpid()}-{uuid.uuid4().hex[:6]}@%h",
                    pool=pool,
                    concurrency=concurrency if pool != "solo" else None,
                ),
                cwd=ROOT,
                env=process_env(CELERY_QUEUE_PREFIX=prefix, **env),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        wait_for(
            lambda: "ready" in log.read_text() or self.proc.poll() is not None,
            60,
            what="celery worker",
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{log.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        _stop(self.proc)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, tmp_path_factory):
    """A worker consuming the standard queues, with no provider configured (the outbox)."""
    worker = Worker(tmp_path_factory.mktemp("worker") / "worker.log", {})
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="session")
def start_worker(django_db_setup, tmp_path_factory):
    """Starts extra workers with their own environment (provider settings …) on queues of their
    own (``prefix``), so the session worker never takes their tasks. Stopped at the end."""
    workers: list[Worker] = []

    def start(env: dict, prefix: str, pool: str = "solo", concurrency: int = 1) -> Worker:
        worker = Worker(
            tmp_path_factory.mktemp("worker") / f"{prefix}worker.log",
            env,
            prefix,
            pool=pool,
            concurrency=concurrency,
        )
        workers.append(worker)
        return worker

    yield start
    _stop_all([worker.proc for worker in workers])


class LiveServer:
    """A uvicorn process serving ``communication.asgi`` against the test database (``env``: more
    environment, e.g. the ``CELERY_QUEUE_PREFIX`` of the worker that must take what it enqueues)."""

    def __init__(self, log: Path, env: dict | None = None):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = self.url.replace("http", "ws", 1)
        self.log = log
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(
                server_argv(port, host="127.0.0.1"),
                cwd=ROOT,
                env=process_env(**(env or {})),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._up, 60, what="uvicorn")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/health/live", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.proc)

    def __str__(self) -> str:
        return self.url


@pytest.fixture(scope="session")
def live_asgi(django_db_setup, tmp_path_factory):
    """A real uvicorn process serving the project (HTTP and websockets): ``.url``, ``.ws_url``,
    ``.log`` (its output, JSON lines)."""
    server = LiveServer(tmp_path_factory.mktemp("asgi") / "asgi.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def start_live_asgi(django_db_setup, tmp_path_factory):
    """Starts extra uvicorn processes with their own environment (a queue prefix shared with a
    ``start_worker`` worker, so what a page enqueues reaches that worker). Stopped at the end."""
    servers: list[LiveServer] = []

    def start(env: dict) -> LiveServer:
        server = LiveServer(tmp_path_factory.mktemp("asgi") / "asgi.log", env)
        servers.append(server)
        return server

    yield start
    _stop_all([server.proc for server in servers])


class Proxy:
    """A TCP forwarder between a browser and a live server, which a test uses to cut sockets
    (``cut``), to park new connections (``up`` cleared: the service is "down"), to swallow
    traffic (``frozen``: a dead socket that never closes) and to hold a reconnected websocket's
    first frames (``hold_next_upgrade`` until ``released``). No hook in the service: the page's
    origin is the proxy's, which the websocket accepts as the host it connected to."""

    def __init__(self, server: LiveServer):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.target = int(server.url.rsplit(":", 1)[1])
        self.server_url = server.url  # straight to the server, for calls the proxy must not cut
        self.up = threading.Event()
        self.up.set()
        self.frozen = False  # drop every byte, close nothing: a dead peer
        self.hold_next_upgrade = False  # a websocket's frames after its handshake wait for release
        self.released = threading.Event()
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        self.up.wait()  # while down, a new connection waits here (parked, not refused)
        upstream = socket.create_connection(("127.0.0.1", self.target))
        with self.lock:
            self.open += [client, upstream]
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, src, dst, from_browser):
        head = b""
        holding = None  # decided once the request's head is read
        try:
            while data := src.recv(65536):
                if self.frozen:
                    continue
                if from_browser and holding is None:
                    head += data
                    if b"\r\n\r\n" not in head:
                        continue
                    request, _, data = head.partition(b"\r\n\r\n")
                    dst.sendall(request + b"\r\n\r\n")
                    holding = self.hold_next_upgrade and b"upgrade: websocket" in request.lower()
                    if holding:
                        self.hold_next_upgrade = False
                        self.released.wait(30)
                    if not data:
                        continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        """Closes every connection (the browser sees its socket drop, code 1006)."""
        with self.lock:
            sockets, self.open = self.open, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.frozen = False

    def close(self):
        self.listener.close()
        self.cut()


@pytest.fixture
def tcp_proxy(live_asgi):
    """A ``Proxy`` in front of ``live_asgi``, for one test."""
    proxy = Proxy(live_asgi)
    try:
        yield proxy
    finally:
        proxy.close()


@contextlib.contextmanager
def held_open(sql: str, params=()) -> Iterator[None]:
    """Runs ``sql`` in a transaction of another connection (a thread's) that stays open until
    the block ends, then commits."""
    ran, release = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, params)
                ran.set()
                release.wait(120)
        except BaseException as exc:
            failed.append(exc)
            ran.set()
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert ran.wait(30) and not failed, failed
    try:
        yield
    finally:
        release.set()
        thread.join(30)
    assert not failed, failed


def stored(model, field_name: str, pk) -> bytes | None:
    """The raw column of an encrypted field (``communication.fields``), as the database holds it."""
    field = model._meta.get_field(field_name)
    table, column = model._meta.db_table, field.column
    pk_column = model._meta.pk.column
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT "{column}" FROM "{table}" WHERE "{pk_column}" = %s',  # noqa: S608
            [pk],
        )
        row = cursor.fetchone()
    assert row is not None, f"no {model.__name__} {pk}"
    return None if row[0] is None else bytes(row[0])


def assert_encrypted(obj, field_name: str, plaintext: str | None = None) -> None:
    """``obj``'s ``field_name`` is ciphertext in its column (the format's version byte, no
    ``plaintext`` in it) and reads back through the ORM as the value written."""
    from communication.fields import VERSION

    model = type(obj)
    raw = stored(model, field_name, obj.pk)
    assert raw is not None and raw[:1] == VERSION, f"{model.__name__}.{field_name} not encrypted"
    if plaintext:
        # After the header: the key id (a derived one is hex) may hold a short plaintext by chance.
        assert plaintext.encode() not in raw[2 + raw[1] :]
        read = model._base_manager.values_list(field_name, flat=True).get(pk=obj.pk)
        assert plaintext in (
            read if isinstance(read, str) else json.dumps(read, ensure_ascii=False)
        )


@contextlib.contextmanager
def before_migration(app: str, name: str) -> Iterator[None]:
    """The schema as it was just before ``app``'s migration ``name`` (inside the test's
    transaction, which undoes it all): the block writes rows as they were then, and on leaving
    every app is migrated forward to its latest again."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    (before,) = [p for p in graph.node_map[(app, name)].parents if p.key[0] == app]
    executor.migrate([before.key])
    yield
    with connection.cursor() as cursor:
        # Deferred foreign key checks of the rows written fire now (a table with pending
        # trigger events cannot be altered), and deferral is back as a deployment has it, so
        # that the migration meets the events its own writes queue.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
