"""What the fault scenarios share: a provider played by a local server that counts what it
receives per delivery, a TCP proxy that takes a server "down" (every connection cut, new ones
refused) and back, a load driver for the send API, and the tally of a run (lost, sent twice,
flagged). Everything listens on loopback only."""

from __future__ import annotations

import collections
import http.client
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from django.db import connection

TERMINAL = ("sent", "delivered", "failed", "suppressed", "skipped", "cancelled", "ambiguous")


class _FakeProvider:
    """A provider's send endpoint on loopback, with a ``latency`` and an outage switch
    (``status``: the code it answers while "down"; ``OK`` otherwise). ``received[delivery id]``
    counts the messages it accepted, ``arrivals`` when (``time.monotonic()``), ``by_path`` by
    the path they were posted to, and ``calls`` every call: (came, answered, status).
    Subclasses say how a body names its deliveries and what an acceptance looks like."""

    OK = 200

    def __init__(self, latency: float = 0.0):
        self.latency = latency
        self.status = self.OK
        self.received: collections.Counter[str] = collections.Counter()
        self.arrivals: list[float] = []
        self.by_path: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self.calls: list[tuple[float, float, int]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                came = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if fake.latency:
                    time.sleep(fake.latency)
                status = fake.status
                with fake.lock:
                    if status == fake.OK:
                        for delivery_id in fake.delivery_ids(raw):
                            fake.received[delivery_id] += 1
                            fake.arrivals.append(time.monotonic())
                            fake.by_path[self.path] += 1
                    else:
                        fake.refused += 1
                    fake.calls.append((came, time.monotonic(), status))
                headers, answer = fake.answer()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def delivery_ids(self, raw: bytes) -> list[str]:
        raise NotImplementedError

    def answer(self) -> tuple[dict[str, str], bytes]:
        raise NotImplementedError

    def duplicates(self) -> dict[str, int]:
        with self.lock:
            return {d: n for d, n in self.received.items() if n > 1}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeSendGrid(_FakeProvider):
    """SendGrid's mail-send endpoint (see ``_FakeProvider``). Workers given different base
    paths on this one server (``env(path=…)``) can be told apart by ``by_path``."""

    OK = 202

    def delivery_ids(self, raw: bytes) -> list[str]:
        return _delivery_ids(json.loads(raw or b"{}"))

    def answer(self) -> tuple[dict[str, str], bytes]:
        return {"X-Message-Id": f"sg-{uuid.uuid4().hex}"}, b""

    def env(self, alias: str = "sendgrid", path: str = "") -> dict[str, str]:
        """The worker's environment for this server as its email provider; ``path`` (``"/w1"``)
        goes before the API's own, so that ``by_path`` tells this worker's calls apart."""
        return {
            "EMAIL_PROVIDERS": alias,
            "SENDGRID_API_KEY": "SG.test",
            "SENDGRID_API_URL": f"{self.url}{path}/v3/",
        }


class FakeMailgun(_FakeProvider):
    """Mailgun's messages endpoint (a fallback email provider; see ``_FakeProvider``)."""

    DELIVERY_ID = re.compile(
        rb"v(?::|%3A)delivery_id(?:=|\"\r\n\r\n)([0-9a-f-]{36})", re.IGNORECASE
    )

    def delivery_ids(self, raw: bytes) -> list[str]:
        return [found.decode() for found in self.DELIVERY_ID.findall(raw)]

    def answer(self) -> tuple[dict[str, str], bytes]:
        body = {"id": f"<{uuid.uuid4().hex}@mg.example.com>", "message": "Queued."}
        return {"Content-Type": "application/json"}, json.dumps(body).encode()

    def env(self) -> dict[str, str]:
        """The worker's environment for this server as the ``mailgun`` provider."""
        return {
            "MAILGUN_API_KEY": "key-test",
            "MAILGUN_SENDER_DOMAIN": "mg.example.com",
            "MAILGUN_API_URL": f"{self.url}/v3",
        }


def _delivery_ids(body: dict) -> list[str]:
    found = []
    top = (body.get("custom_args") or {}).get("delivery_id")
    for p in body.get("personalizations") or []:
        found.append((p.get("custom_args") or {}).get("delivery_id") or top)
    return [d for d in found if d] or ([top] if top else [])


class FaultProxy:
    """A TCP forwarder to ``target`` (``(host, port)`` or a unix socket's path). ``down()`` cuts
    every open connection and refuses new ones (accepted, then closed at once: a server that
    is not there); ``up()`` lets them through again. ``.port``: where to point a client."""

    def __init__(self, target: tuple[str, int] | str):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_up = True
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect(self) -> socket.socket:
        if isinstance(self.target, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            return upstream
        return socket.create_connection(self.target)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.is_up:
                client.close()
                continue
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        self.is_up = False
        with self.lock:
            sockets, self.open = self.open, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def up(self) -> None:
        self.is_up = True

    def close(self) -> None:
        self.listener.close()
        self.down()


def database_target() -> tuple[str, int] | str:
    """Where the test database listens, for a ``FaultProxy``: ``(host, port)`` or its unix
    socket's path (the embedded server's)."""
    s = connection.settings_dict
    host = s.get("HOST") or s.get("OPTIONS", {}).get("host") or "127.0.0.1"
    port = int(s.get("PORT") or 5432)
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}"
    return (host, port)


def database_url_through(proxy: FaultProxy) -> str:
    """The test database's URL through ``proxy`` (a child process's ``DATABASE_URL``)."""
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@127.0.0.1:{proxy.port}/{s['NAME']}"


@dataclass
class Answer:
    """One answer of a ``Load``: ``sent_at`` is ``time.monotonic()`` when the request left."""

    sent_at: float
    status: str
    latency: float
    code: str | None
    retry_after: str | None


def _json_or_empty(data: bytes) -> dict:
    try:
        parsed = json.loads(data)
    except ValueError:  # a plain-text 500 from the server, say
        return {}
    return parsed if isinstance(parsed, dict) else {}


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Load:
    """Sends ``POST /api/v1/notifications`` at ``rate`` per second from a thread until
    ``stop()``; ``statuses`` counts the answers (``"error"``: no answer), ``accepted`` holds the
    request ids of the 202s, ``answers`` each answer in order (when it was sent, its status,
    latency, body ``code`` and ``Retry-After``)."""

    base_url: str
    token: str
    rate: float
    body: Callable[[int], dict]
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    accepted: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(60)

    def _run(self) -> None:
        host, port = urlsplit(self.base_url).hostname, urlsplit(self.base_url).port
        conn: http.client.HTTPConnection | None = None
        n = 0
        started = time.monotonic()
        while not self.stopped.is_set():
            due = started + n / self.rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            payload = json.dumps(self.body(n))
            n += 1
            t0 = time.monotonic()
            try:
                conn = conn or http.client.HTTPConnection(host, port, timeout=15)
                conn.request(
                    "POST",
                    "/api/v1/notifications",
                    payload,
                    {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                data = response.read()
                self.statuses[str(response.status)] += 1
                parsed = _json_or_empty(data)
                if response.status == 202:
                    self.accepted.append(parsed["request_id"])
                answer = Answer(
                    t0,
                    str(response.status),
                    time.monotonic() - t0,
                    parsed.get("code"),
                    response.getheader("Retry-After"),
                )
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                self.statuses["error"] += 1
                if conn is not None:
                    conn.close()
                conn = None
                answer = Answer(t0, "error", time.monotonic() - t0, None, None)
            self.latencies.append(answer.latency)
            self.answers.append(answer)


def deliveries_of(request_ids: Iterable[str]) -> list[tuple[str, str, bool]]:
    """``(delivery id, status, possibly_duplicate)`` of every delivery of those requests."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT d.id::text, d.status, d.possibly_duplicate
            FROM notifications_delivery d
            JOIN notifications_notification n ON n.id = d.notification_id
            WHERE n.request_id = ANY(%s::uuid[])
            """,
            [list(request_ids)],
        )
        return cursor.fetchall()


@dataclass
class Tally:
    accepted: int
    deliveries: int
    terminal: int
    lost: int
    duplicated: int
    flagged: int
    unflagged_duplicates: list[str]

    def line(self) -> str:
        return (
            f"accepted {self.accepted}, deliveries {self.deliveries}, terminal {self.terminal}, "
            f"lost {self.lost}, sent twice {self.duplicated}, flagged {self.flagged}, "
            f"sent twice unflagged {len(self.unflagged_duplicates)}"
        )


def tally(request_ids: list[str], provider: FakeSendGrid) -> Tally:
    found = deliveries_of(request_ids)
    duplicates = provider.duplicates()
    flagged = {d for d, _, f in found if f}
    return Tally(
        accepted=len(request_ids),
        deliveries=len(found),
        terminal=sum(1 for _, s, _ in found if s in TERMINAL),
        lost=sum(1 for _, s, _ in found if s not in TERMINAL),
        duplicated=len(duplicates),
        flagged=len(flagged),
        unflagged_duplicates=sorted(set(duplicates) - flagged),
    )


def settle(request_ids: list[str], timeout: float, sweep: Callable[[], object]) -> float:
    """Runs ``sweep`` (the beat's job) until every delivery of ``request_ids`` is terminal or
    ``timeout`` passes; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if all(s in TERMINAL for _, s, _ in deliveries_of(request_ids)):
            break
        sweep()
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)
