"""Campaigns: personalised emails into a local SMTP sink, side by side in one run: a raw
``smtplib`` loop (the relay's ceiling), django-post-office (``send_many`` +
``send_queued_mail``) and, once issue 17 builds it, the service's campaign path.

    .venv/bin/python bench/campaigns.py [--emails 20000] [--parts smtplib,post-office,campaign]
        [--po-processes 1,2] [--po-batch-size 1000] [--po-threads 5]

The sink is aiosmtpd in a process of its own (``bench/_smtp_sink.py``): it accepts several
connections at once, counts what it receives, notes the first and last receive times and keeps
each recipient's token, so that every part is checked for personalisation (each recipient got
their own text, once). Each email is a small text + HTML message (``multipart/alternative``)
with the recipient's name and token. Every figure is end to end: from the first line of the
part's sending code until the sink holds all ``--emails`` messages.

- ``smtplib``: one ``smtplib.SMTP`` connection, one message composed (a format string: the
  ``email`` package would cost the sender more than the sink's work) and sent after the other.
- ``post-office``: django-post-office 3.12 in a virtualenv of its own
  (``var/bench-venvs/post-office/``, made from ``bench/requirements-post-office.txt`` if
  missing), a minimal Django project generated in a temporary folder, a scratch PostgreSQL
  database (``bench_campaigns_po``, created and dropped here, on the server of DATABASE_URL or
  ``postgres://root@127.0.0.1``), ``post_office.EmailBackend`` queueing and Django's SMTP
  backend delivering. One ``EmailTemplate``; ``mail.send_many`` of the ``--emails`` messages
  (each with its own context, rendered by send_many) then ``send_queued_mail --processes P``
  (threads per process ``--po-threads``, batches of ``--po-batch-size``, post_office's log
  level 2, its default), in a subprocess so that the two environments never mix. Each of
  ``--po-processes`` is measured; the best is the reference figure.
- ``campaign``: not built yet (issue 17); :func:`measure_campaign` is where it goes.

Prints each figure, its ratio to the smtplib figure of the same run, and the issue's goals.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _proc import cpu_of_commands, cpu_seconds, machine_busy  # bench/_proc.py
from _smtp_sink import Sink  # bench/_smtp_sink.py

ROOT = Path(__file__).resolve().parent.parent
PO_VENV = ROOT / "var" / "bench-venvs" / "post-office"
PO_REQUIREMENTS = ROOT / "bench" / "requirements-post-office.txt"
PO_DATABASE = "bench_campaigns_po"
SENDER = "campaigns@bench.example.com"
SUBJECT = "Hello {name}, your December picks"
TEXT = "Hello {name},\n\nHere are this month's picks, chosen for you.\n\ntoken={token}\n"
HTML = (
    "<html><body><p>Hello <b>{name}</b>,</p><p>Here are this month's picks, chosen for "
    'you.</p><p style="color:#888">token={token}</p></body></html>'
)
COMMAND = ".venv/bin/python bench/campaigns.py"


RAW = (
    "From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
    "Message-ID: <{token}@bench.example.com>\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
    "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n"
    "--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 7bit\r\n\r\n{html}\r\n--{boundary}--\r\n"
)


def raw_message(address: str, name: str, token: str) -> bytes:
    """The message as the raw loop composes it: a format string, no ``email`` package (its
    ``EmailMessage`` costs the sender more than the sink's whole work per message)."""
    return RAW.format(
        sender=SENDER,
        to=address,
        subject=SUBJECT.format(name=name),
        date=formatdate(localtime=True),
        token=token,
        boundary=f"=={token}==",
        text=TEXT.format(name=name, token=token).replace("\n", "\r\n"),
        html=HTML.format(name=name, token=token),
    ).encode()


def database_cpu() -> float:
    """CPU seconds of the machine's PostgreSQL server processes, the connections that ended
    included."""
    return cpu_of_commands(("postgres",), children=True)


def recipients(n: int, run: str) -> list[tuple[str, str, str]]:
    """(address, name, token) of each recipient; the token is unique to the run."""
    return [(f"user{i}@bench.example.com", f"Name{i}", f"{run}-{i}") for i in range(n)]


def check(sink: Sink, people: list[tuple[str, str, str]]) -> str:
    """Each recipient got one message, with their own token."""
    tokens = sink.tokens()
    wrong = sum(1 for address, _, token in people if tokens.get(address) != [token])
    extra = len(tokens.keys() - {address for address, _, _ in people})
    if not wrong and not extra:
        return "personalisation checked: each recipient got one message with their own token"
    return f"personalisation check FAILED: {wrong} recipients wrong or missing, {extra} extra"


def result(
    name: str, n: int, started: float, stats: dict, busy: tuple[float, float], note: str = ""
) -> dict:
    """Prints and answers a part's figure; ``busy`` is :func:`machine_busy` at its start (the
    share of the machine's CPU in use meanwhile tells whether something else ran too)."""
    span = (stats["last"] or started) - started
    rate = stats["count"] / span if span > 0 else 0.0
    now = machine_busy()
    load = (now[0] - busy[0]) / (now[1] - busy[1]) if now[1] > busy[1] else 0.0
    print(
        f"{name}: {stats['count']}/{n} emails in {span:.2f} s = {rate:,.0f} emails/s"
        f" end to end{note}; machine CPU busy {load:.0%}",
        flush=True,
    )
    return {"name": name, "rate": rate, "count": stats["count"], "seconds": span}


# --------------------------------------------------------------------------------- smtplib


def measure_smtplib(sink: Sink, n: int, timeout: float) -> dict:
    """One connection, one message after the other: the relay's ceiling for one sender."""
    people = recipients(n, uuid.uuid4().hex[:8])
    sink.reset()
    sink_cpu = cpu_seconds(sink.pid)
    cpu, busy = time.process_time(), machine_busy()
    started = time.time()
    with smtplib.SMTP("127.0.0.1", sink.smtp_port) as smtp:
        for address, name, token in people:
            smtp.sendmail(SENDER, [address], raw_message(address, name, token))
    stats = sink.wait_for(n, timeout)
    cpu = time.process_time() - cpu
    sink_cpu = cpu_seconds(sink.pid) - sink_cpu
    figure = result(
        "smtplib (1 connection)",
        n,
        started,
        stats,
        busy,
        f"; CPU per email: sender {cpu / n * 1000:.2f} ms, sink {sink_cpu / n * 1000:.2f} ms",
    )
    print(f"  {check(sink, people)}", flush=True)
    return figure


# ----------------------------------------------------------------------------- post-office


PO_SETTINGS = """
SECRET_KEY = "bench"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "post_office"]
DATABASES = {{"default": {{
    "ENGINE": "django.db.backends.postgresql", "NAME": {name!r}, "USER": {user!r},
    "PASSWORD": {password!r}, "HOST": {host!r}, "PORT": {port!r},
}}}}
TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [],
    "APP_DIRS": True}}]
EMAIL_BACKEND = "post_office.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = {smtp_port}
POST_OFFICE = {{
    "BACKENDS": {{"default": "django.core.mail.backends.smtp.EmailBackend"}},
    "BATCH_SIZE": {batch_size},
    "THREADS_PER_PROCESS": {threads},
    "LOCK_FILE_NAME": "bench-post-office",
}}
LOGGING = {{"version": 1, "disable_existing_loggers": False,
    "root": {{"level": "WARNING"}}, "loggers": {{"post_office": {{"level": "WARNING"}}}}}}
"""

# Runs in the post-office virtualenv: argv = people.json processes lockfile [--migrate].
PO_RUNNER = """
import json, os, resource, sys, time
os.environ["DJANGO_SETTINGS_MODULE"] = "bench_settings"
import django
django.setup()
from django.core.management import call_command
from post_office import mail
from post_office.models import STATUS, Email, EmailTemplate, Log

people_file, processes, lockfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if "--migrate" in sys.argv:
    call_command("migrate", verbosity=0)
    raise SystemExit
Log.objects.all().delete()
Email.objects.all().delete()
EmailTemplate.objects.all().delete()
spec = json.load(open(people_file))
template = EmailTemplate.objects.create(
    name="bench", subject=spec["subject"], content=spec["text"], html_content=spec["html"]
)
people = spec["people"]
started = time.time()
mail.send_many([
    {"sender": spec["sender"], "recipients": [address], "template": template,
     "context": {"name": name, "token": token}}
    for address, name, token in people
])
queued = time.time()
call_command("send_queued_mail", processes=processes, lockfile=lockfile)
done = time.time()
own = resource.getrusage(resource.RUSAGE_SELF)
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({
    "started": started, "queued": queued, "done": done,
    "sent": Email.objects.filter(status=STATUS.sent).count(),
    "cpu": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
}))
"""


def database_server() -> tuple[str, str, str, str, str]:
    """(user, password, host, port, URL of the ``postgres`` database) of the server to use."""
    url = urlsplit(os.environ.get("DATABASE_URL") or "postgres://root@127.0.0.1/postgres")
    admin = urlunsplit((url.scheme, url.netloc, "/postgres", url.query, ""))
    admin = admin.replace("postgresql+psycopg", "postgresql")
    return (
        url.username or "",
        url.password or "",
        url.hostname or "127.0.0.1",
        str(url.port or 5432),
        admin,
    )


def scratch_database(admin_url: str, create: bool) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{PO_DATABASE}" WITH (FORCE)')
        if create:
            connection.execute(f'CREATE DATABASE "{PO_DATABASE}"')


def post_office_python() -> Path:
    """The post-office virtualenv's python, made from bench/requirements-post-office.txt
    if missing (the local package index serves it)."""
    python = PO_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PO_VENV.relative_to(ROOT)} …", flush=True)
        PO_VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["python3.11", "-m", "venv", str(PO_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(PO_REQUIREMENTS)], check=True
        )
    return python


def measure_post_office(sink: Sink, n: int, timeout: float, args) -> list[dict]:
    """send_many + send_queued_mail, once for each of ``--po-processes``."""
    python = post_office_python()
    user, password, host, port, admin_url = database_server()
    folder = Path(tempfile.mkdtemp(prefix="bench-post-office-"))
    figures = []
    try:
        (folder / "bench_settings.py").write_text(
            PO_SETTINGS.format(
                name=PO_DATABASE,
                user=user,
                password=password,
                host=host,
                port=port,
                smtp_port=sink.smtp_port,
                batch_size=args.po_batch_size,
                threads=args.po_threads,
            )
        )
        (folder / "runner.py").write_text(PO_RUNNER)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PYTHONPATH"] = str(folder)
        scratch_database(admin_url, create=True)

        def run(*extra: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [str(python), str(folder / "runner.py"), *extra],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )

        migrated = run("-", "1", str(folder / "lock"), "--migrate")
        if migrated.returncode:
            print(f"post-office: migrate failed\n{migrated.stderr[-3000:]}")
            return figures
        for processes in args.po_processes:
            people = recipients(n, uuid.uuid4().hex[:8])
            (folder / "people.json").write_text(
                json.dumps(
                    {
                        "people": people,
                        "sender": SENDER,
                        "subject": SUBJECT.replace("{name}", "{{ name }}"),
                        "text": TEXT.replace("{name}", "{{ name }}").replace(
                            "{token}", "{{ token }}"
                        ),
                        "html": HTML.replace("{name}", "{{ name }}").replace(
                            "{token}", "{{ token }}"
                        ),
                    }
                )
            )
            sink.reset()
            sink_cpu, db_cpu, busy = cpu_seconds(sink.pid), database_cpu(), machine_busy()
            done = run(str(folder / "people.json"), str(processes), str(folder / "lock"))
            if done.returncode:
                print(f"post-office ({processes} processes): failed\n{done.stderr[-3000:]}")
                continue
            times = json.loads(done.stdout.strip().splitlines()[-1])
            stats = sink.wait_for(n, timeout)
            sink_cpu = cpu_seconds(sink.pid) - sink_cpu
            db_cpu = database_cpu() - db_cpu
            # Another server's process ending mid-part makes the difference meaningless.
            database = f"{db_cpu / n * 1000:.2f} ms" if db_cpu >= 0 else "n/a"
            figure = result(
                f"post-office ({processes} process{'es' if processes > 1 else ''})",
                n,
                times["started"],
                stats,
                busy,
                f"; send_many {times['queued'] - times['started']:.2f} s, send_queued_mail "
                f"{times['done'] - times['queued']:.2f} s; CPU per email: post-office "
                f"{times['cpu'] / n * 1000:.2f} ms, PostgreSQL {database:s}, "
                f"sink {sink_cpu / n * 1000:.2f} ms",
            )
            print(f"  {check(sink, people)} (marked sent: {times['sent']})", flush=True)
            figure["processes"] = processes
            figures.append(figure)
    finally:
        try:
            scratch_database(admin_url, create=False)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return figures


# -------------------------------------------------------------------------------- campaign


def campaign_prepare(people: list[tuple[str, str, str]]) -> Any:
    """What staff prepare before a launch: a static list of ``people`` (address, name, token;
    name and token as each member's data, written by the lists' COPY) and a one-step campaign to
    it, scheduled now and approved by a second staff member (the audience is above the approval
    threshold). Returns the campaign, ``scheduled``."""
    from campaigns.services import campaigns as life
    from campaigns.services import lists

    members = lists.static_list_create(actor="staff:bench", name=f"bench {len(people):,}")
    for start in range(0, len(people), lists.MAX_ROWS):
        lists.members_add(
            static_list=members,
            rows=[
                {"email": a, "data": {"name": name, "token": token}}
                for a, name, token in people[start : start + lists.MAX_ROWS]
            ],
        )
    campaign = life.campaign_create(
        actor="staff:bench",
        name=f"bench {len(people):,}",
        category="alerts",
        channels=["email"],
        static_list=members,
        steps=[
            {
                "content": {
                    "subject": SUBJECT.replace("{name}", "{{ name }}"),
                    "text": TEXT.replace("{name}", "{{ name }}").replace("{token}", "{{ token }}"),
                    "html": HTML.replace("{name}", "{{ name }}").replace("{token}", "{{ token }}"),
                }
            }
        ],
    )
    campaign = life.campaign_schedule(campaign=campaign, actor="staff:bench", at=None)
    if campaign.status == "pending_approval":
        campaign = life.campaign_approve(campaign=campaign, actor="staff:bench-approver")
    return campaign


def campaign_launch(campaign: Any) -> None:
    """Starts ``campaign`` as the beat's ``campaigns-due`` pass does (its run, and the ledger
    of its recipients in one INSERT … SELECT); the bulk workers fan it out and deliver it."""
    from campaigns.services.runs import campaigns_due

    started = campaigns_due()["started"]
    assert started == 1, f"the campaign did not start ({campaign.status})"


class Service:
    """The service's workers as ``serve`` runs them (one for the realtime, transactional and
    default queues, one for the bulk queue with ``bulk_concurrency`` processes) against the
    bench's database, with the providers of ``env``; this process writes as the API would."""

    def __init__(self, env: dict[str, str], bulk_concurrency: int) -> None:
        from communication.processes import worker_argv

        prefix = os.environ["CELERY_QUEUE_PREFIX"]
        self.env = {**os.environ, "LOG_LEVEL": "WARNING", "RATE_LIMITS": "off", **env}
        self.procs = []
        self.log = open(Path(tempfile.gettempdir()) / f"{prefix}workers.log", "ab")
        for name, queues, concurrency in (
            ("tx", ("realtime", "transactional", "default"), 2),
            ("bulk", ("bulk",), bulk_concurrency),
        ):
            self.procs.append(
                subprocess.Popen(
                    worker_argv(
                        queues=",".join(prefix + q for q in queues),
                        name=f"{prefix}{name}-{uuid.uuid4().hex[:6]}@%h",
                        loglevel="WARNING",
                        concurrency=concurrency,
                    ),
                    cwd=ROOT,
                    env=self.env,
                    stdout=self.log,
                    stderr=subprocess.STDOUT,
                )
            )
        self.bulk = self.procs[1]
        time.sleep(1)
        deadline = time.monotonic() + 60
        while len(self.pool(self.bulk.pid)) < bulk_concurrency:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.stop()
                raise RuntimeError("the bench's workers did not start")
            time.sleep(0.2)
        time.sleep(2)  # the pool processes import the project

    @staticmethod
    def pool(pid: int) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(pid).children()]

    def peak_rss_mb(self) -> float:
        """The largest peak resident set (VmHWM) of the bulk worker's pool processes, in MB."""
        peaks = []
        for child in self.pool(self.bulk.pid):
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return max(peaks, default=0.0)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()


def service_setup() -> None:
    """Django for this process, on the bench's database (``DATABASE_URL``'s server, database
    ``bench_campaigns``, made and migrated here) and Redis (``REDIS_URL``, else DB 15 of the
    local server), with broker queues of this run's own."""
    if "django" in sys.modules and getattr(sys.modules["django"], "apps", None):
        from django.apps import apps

        if apps.ready:
            return
    user, password, host, port, admin_url = database_server()
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{SERVICE_DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{SERVICE_DATABASE}"')
    auth = user + (f":{password}" if password else "")
    os.environ["DATABASE_URL"] = f"postgres://{auth}@{host}:{port}/{SERVICE_DATABASE}"
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
    os.environ["CELERY_QUEUE_PREFIX"] = f"benchc{uuid.uuid4().hex[:6]}-"
    os.environ["CACHE_KEY_PREFIX"] = os.environ["CELERY_QUEUE_PREFIX"]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


SERVICE_DATABASE = "bench_campaigns"


def measure_campaign(sink: Sink, n: int, timeout: float, bulk_concurrency: int = 2) -> dict:
    """The service's campaign path: ``n`` personalised emails (the recipients of
    :func:`recipients`, their name and token in the request's data) through the real pipeline
    and the SMTP provider (``SMTP_URL`` → the sink; one connection per bulk worker process),
    timed from :func:`campaign_launch` until the sink holds all ``n``; the text checked."""
    service_setup()
    service = Service(
        {"EMAIL_PROVIDERS": "smtp", "SMTP_URL": f"smtp://127.0.0.1:{sink.smtp_port}"},
        bulk_concurrency,
    )
    try:
        people = recipients(n, uuid.uuid4().hex[:8])
        sink.reset()
        sink_cpu, busy = cpu_seconds(sink.pid), machine_busy()
        campaign = campaign_prepare(people)
        started = time.time()
        campaign_launch(campaign)
        launched = time.time() - started
        stats = sink.wait_for(n, timeout)
        sink_cpu = cpu_seconds(sink.pid) - sink_cpu
        figure = result(
            f"campaign (SMTP provider, {bulk_concurrency} bulk processes)",
            n,
            started,
            stats,
            busy,
            f"; launch (run started, its ledger written) {launched:.2f} s, the last handed over "
            f"{(stats['last'] or started) - started - launched:.2f} s after; sink CPU per email "
            f"{sink_cpu / n * 1000:.2f} ms",
        )
        print(f"  {check(sink, people)}", flush=True)
        return figure
    finally:
        service.stop()


# ------------------------------------------------------------------ batch HTTP provider


def serve_fake_sendgrid(port: int) -> None:
    """A fake SendGrid (``POST /v3/mail/send``) that applies each personalization's
    substitutions (``notifications.tests.fakes``) and keeps each recipient's token;
    ``GET /stats``, ``GET /tokens``, ``DELETE /stats``."""
    import re
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sys.path.insert(0, str(ROOT))
    from notifications.tests.fakes import sendgrid_messages

    token = re.compile(r"token=([A-Za-z0-9_-]+)")
    lock = threading.Lock()
    state: dict = {}

    def reset() -> None:
        state.update(count=0, calls=0, largest=0, first=None, last=None, tokens={})

    reset()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            messages = sendgrid_messages(json.loads(body))
            now = time.time()
            with lock:
                state["calls"] += 1
                state["largest"] = max(state["largest"], len(messages))
                for message in messages:
                    found = token.search(message["text"])
                    if found is None:
                        continue  # a transactional send made meanwhile
                    state["count"] += 1
                    state["first"] = state["first"] or now
                    state["last"] = now
                    state["tokens"].setdefault(message["to"].lower(), []).append(found.group(1))
            self.reply(202)

        def do_GET(self) -> None:
            with lock:
                if self.path == "/tokens":
                    self.reply(200, json.dumps(state["tokens"]).encode())
                else:
                    self.reply(
                        200, json.dumps({k: v for k, v in state.items() if k != "tokens"}).encode()
                    )

        def do_DELETE(self) -> None:
            with lock:
                reset()
            self.reply(200, b"{}")

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


class FakeSendGrid:
    """The fake SendGrid in a process of its own."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-fake-sendgrid", str(self.port)], cwd=ROOT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.call("GET", "/stats")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def call(self, method: str, path: str):
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path)
            return json.loads(connection.getresponse().read() or b"{}")
        finally:
            connection.close()

    def wait_for(self, n: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            stats = self.call("GET", "/stats")
            if stats["count"] >= n or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def transactional_latency(stop, latencies: list[float], failures: list[str]) -> None:
    """Every half second, one transactional email (``notification_send``, priority high)
    and the time until its delivery is ``sent``, while the campaign runs."""
    from django.db import connection

    from notifications import services
    from notifications.models import Delivery

    try:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            outcome = services.notification_send(
                caller="bench:transactional",
                payload={
                    "recipients": [{"email": f"tx{n}@bench.example.com"}],
                    "category": "alerts",
                    "channels": ["email"],
                    "priority": "high",
                    "content": {"subject": "Your code", "body": "Your code is 1234."},
                },
            )
            delivery_id = outcome.body["notifications"][0]["deliveries"][0]["id"]
            while time.monotonic() - started < 60:
                status = Delivery.objects.filter(id=delivery_id).values_list("status", flat=True)
                if status and status[0] in ("sent", "delivered", "failed"):
                    latencies.append(time.monotonic() - started)
                    break
                time.sleep(0.01)
            else:
                failures.append(delivery_id)
            stop.wait(max(0.5 - (time.monotonic() - started), 0))
    finally:
        connection.close()


def measure_batch_provider(
    n: int, timeout: float, bulk_concurrency: int = 2, transactional: bool = False
) -> dict:
    """``n`` personalised emails through the real pipeline into the fake SendGrid (its batch
    call: 1,000 personalizations), from :func:`campaign_launch` until the fake has handed
    over all ``n``; the bulk worker processes' peak RSS; with ``transactional``, the latency of
    transactional sends made meanwhile."""
    import threading

    service_setup()
    fake = FakeSendGrid()
    service = Service(
        {
            "EMAIL_PROVIDERS": "sendgrid",
            "SENDGRID_API_KEY": "SG.bench",
            "SENDGRID_API_URL": f"http://127.0.0.1:{fake.port}/v3/",
        },
        bulk_concurrency,
    )
    try:
        people = recipients(n, uuid.uuid4().hex[:8])
        fake.call("DELETE", "/stats")
        stop, latencies, failures = threading.Event(), [], []
        watcher = threading.Thread(
            target=transactional_latency, args=(stop, latencies, failures), daemon=True
        )
        busy = machine_busy()
        campaign = campaign_prepare(people)
        started = time.time()
        if transactional:
            watcher.start()
        campaign_launch(campaign)
        launched = time.time() - started
        stats = fake.wait_for(n + 0, timeout)
        stop.set()
        if transactional:
            watcher.join(70)
        peak = service.peak_rss_mb()
        stats["last"] = stats["last"] or started
        tokens = fake.call("GET", "/tokens")
        wrong = sum(1 for a, _, t in people if tokens.get(a) != [t])
        figure = result(
            f"batch provider (fake SendGrid, {n:,})",
            n,
            started,
            stats,
            busy,
            f"; {stats['calls']} calls (largest {stats['largest']} personalizations); launch "
            f"(run started, its ledger written) {launched:.2f} s, the last handed over "
            f"{stats['last'] - started - launched:.2f} s after; bulk worker peak RSS {peak:.0f} MB",
        )
        print(
            "  personalisation checked: each recipient got one message with their own token"
            if not wrong
            else f"  personalisation check FAILED: {wrong} recipients wrong or missing",
            flush=True,
        )
        figure["peak_rss_mb"] = peak
        if transactional:
            latencies.sort()
            if latencies:
                p50 = latencies[len(latencies) // 2]
                p95 = latencies[min(int(len(latencies) * 0.95), len(latencies) - 1)]
                print(
                    f"  transactional during the run: {len(latencies)} sends, time to sent "
                    f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max "
                    f"{latencies[-1] * 1000:.0f} ms; {len(failures)} not sent within 60 s",
                    flush=True,
                )
                figure["transactional_p95"] = p95
        return figure
    finally:
        service.stop()
        fake.stop()


# -------------------------------------------------------------------------------- bulk API

BULK_GOAL = 20_000  # recipients accepted per second (issue 17)


def measure_bulk_api(requests: int = 10, size: int = 10_000, concurrency: int = 2) -> dict:
    """``POST /api/v1/notifications/bulk``: ``requests`` requests of ``size`` personalised
    recipients (each with its name and token as data) against the real server
    (``communication.server``, ``WEB_CONCURRENCY`` = ``concurrency``) on DATABASE_URL's
    database, ``concurrency`` requests at a time; recipients accepted per second from the first
    request sent to the last 202. The fan-out is not part of it: the server's queue prefix is
    the bench's own and no worker takes it; the bench's batches are deleted at the end."""
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    from communication.auth import tokens
    from communication.processes import server_argv

    call_command("migrate", interactive=False, verbosity=0)
    caller = f"bench-bulk-{uuid.uuid4().hex[:6]}"
    token = tokens.issue_service_token(caller, ["notifications:send"], ttl=3600)
    prefix = f"{caller}-"
    with socket_port() as port:
        pass
    env = dict(
        os.environ,
        CELERY_QUEUE_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
        LOG_LEVEL="WARNING",
        RATE_LIMITS="off",  # the bench measures the accept path, not its limits
        WEB_CONCURRENCY=str(concurrency),
    )
    server = subprocess.Popen(server_argv(port, host="127.0.0.1"), cwd=ROOT, env=env)
    try:
        wait_live(port)
        for _ in range(concurrency):  # warm-up: every server process, its connections
            bulk_post(port, token, bulk_body(1000))
        bodies = [bulk_body(size) for _ in range(requests)]
        print(
            f"bulk API: {requests} requests of {size} recipients, {concurrency} at a time, "
            f"{concurrency} server process(es); request body {len(bodies[0]) / 1e6:.1f} MB",
            flush=True,
        )
        server_cpu, db_cpu, busy = cpu_seconds(server.pid), database_cpu(), machine_busy()
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            answers = list(pool.map(lambda b: bulk_post(port, token, b), bodies))
        elapsed = time.perf_counter() - started
        server_cpu = cpu_seconds(server.pid) - server_cpu
        db_cpu = database_cpu() - db_cpu
        now = machine_busy()
        load = (now[0] - busy[0]) / (now[1] - busy[1]) if now[1] > busy[1] else 0.0
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        bulk_cleanup(caller, prefix)
    failed = [status for status, _, _ in answers if status != 202]
    accepted = sum(n for _, n, _ in answers)
    rate = accepted / elapsed if elapsed else 0.0
    latencies = sorted(seconds for _, _, seconds in answers)
    print(
        f"bulk API: {accepted}/{requests * size} recipients accepted in {elapsed:.2f} s = "
        f"{rate:,.0f} recipients/s (goal {BULK_GOAL:,}/s: {rate / BULK_GOAL:.2f}x); "
        f"{len(failed)} failed requests; per request {latencies[0]:.2f}-{latencies[-1]:.2f} s; "
        f"CPU per 10,000 recipients: server {server_cpu / accepted * 1e4:.2f} s, "
        f"PostgreSQL {db_cpu / accepted * 1e4:.2f} s; machine CPU busy {load:.0%}"
        if accepted
        else f"bulk API: nothing accepted ({failed})",
        flush=True,
    )
    return {"name": "bulk API", "rate": rate, "count": accepted, "seconds": elapsed}


def bulk_body(n: int) -> bytes:
    """A bulk request of ``n`` recipients of :func:`recipients`, their name and token as data."""
    content = {
        "subject": SUBJECT.replace("{name}", "{{ name }}"),
        "text": TEXT.replace("{name}", "{{ name }}").replace("{token}", "{{ token }}"),
        "html": HTML.replace("{name}", "{{ name }}").replace("{token}", "{{ token }}"),
    }
    return json.dumps(
        {
            "category": "alerts",
            "channels": ["email"],
            "content": content,
            "recipients": [
                {"email": address, "data": {"name": name, "token": token}}
                for address, name, token in recipients(n, uuid.uuid4().hex[:8])
            ],
        }
    ).encode()


def bulk_post(port: int, token: str, payload: bytes) -> tuple[int, int, float]:
    """(status, recipients accepted, seconds) of one bulk request."""
    import http.client

    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request(
            "POST",
            "/api/v1/notifications/bulk",
            payload,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        answer = conn.getresponse()
        data = answer.read()
    finally:
        conn.close()
    accepted = json.loads(data).get("accepted", 0) if answer.status == 202 else 0
    return answer.status, accepted, time.perf_counter() - started


def wait_live(port: int, timeout: float = 60) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health/live")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not start")
        time.sleep(0.2)


def bulk_cleanup(caller: str, prefix: str) -> None:
    """Deletes the bench's batches and the fan-out tasks nobody took."""
    import redis
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM notifications_bulkrecipient WHERE request_id IN "
            "(SELECT id FROM notifications_notificationrequest WHERE caller = %s)",
            [caller],
        )
        cursor.execute("DELETE FROM notifications_notificationrequest WHERE caller = %s", [caller])
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(
        *(f"{prefix}{q}" for q in ("realtime", "transactional", "bulk", "default"))
    )


@contextlib.contextmanager
def socket_port():
    """A port free now (the server binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# ------------------------------------------------------------------------------------ main


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=20000)
    parser.add_argument(
        "--parts",
        default="smtplib,post-office,campaign,batch-provider,bulk",
        help="comma-separated: smtplib, post-office, campaign, batch-provider, bulk (the bulk "
        "API) (default: all)",
    )
    parser.add_argument("--bulk-requests", type=int, default=10)
    parser.add_argument("--bulk-size", type=int, default=10_000)
    parser.add_argument(
        "--bulk-api-concurrency",
        type=int,
        default=2,
        help="bulk part: requests at once = server processes (default 2)",
    )
    parser.add_argument(
        "--po-processes",
        default="1,2",
        help="send_queued_mail --processes values to measure (default 1,2: the machine's cores)",
    )
    parser.add_argument(
        "--po-batch-size",
        type=int,
        default=1000,
        help="POST_OFFICE BATCH_SIZE: emails send_queued_mail takes per round (its default: 100)",
    )
    parser.add_argument(
        "--po-threads", type=int, default=5, help="POST_OFFICE THREADS_PER_PROCESS (default 5)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds a part may take")
    parser.add_argument(
        "--bulk-concurrency",
        type=int,
        default=2,
        help="the service's bulk worker processes (WORKER_BULK_CONCURRENCY; default 2)",
    )
    parser.add_argument(
        "--batch-emails",
        default="10000,100000",
        help="batch-provider part: run sizes (the peak RSS of the last is compared to the first)",
    )
    parser.add_argument("--serve-fake-sendgrid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.po_processes = [int(p) for p in args.po_processes.split(",")]
    args.batch_emails = [int(p) for p in args.batch_emails.split(",")]
    return args


def main() -> None:
    args = parse_args()
    if args.serve_fake_sendgrid:
        serve_fake_sendgrid(args.serve_fake_sendgrid)
        return
    n = args.emails
    command = " ".join([COMMAND, *sys.argv[1:]])
    print(f"command: {command}")
    print(f"{n} personalised emails (text + HTML) into an aiosmtpd sink, end to end", flush=True)
    figures: dict[str, dict] = {}
    with Sink(record=True) as sink:
        if "smtplib" in args.parts:
            figures["smtplib"] = measure_smtplib(sink, n, args.timeout)
        if "post-office" in args.parts:
            runs = measure_post_office(sink, n, args.timeout, args)
            if runs:
                figures["post-office"] = max(runs, key=lambda f: f["rate"])
        if "campaign" in args.parts:
            campaign = measure_campaign(sink, n, args.timeout, args.bulk_concurrency)
            if campaign:
                figures["campaign"] = campaign
    smtp = figures.get("smtplib", {}).get("rate")
    print("\nfigures (emails/s end to end; ratio to smtplib of this run):")
    for figure in figures.values():
        ratio = f"{figure['rate'] / smtp:.2f}x smtplib" if smtp else "no smtplib figure"
        print(f"  {figure['name']:34} {figure['rate']:8,.0f}/s   {ratio}")
    if "campaign" not in figures:
        print(f"  {'campaign':34} {'—':>8}     not measured")
    reference = figures.get("post-office", {}).get("rate")
    print("goals (issue 17):")
    campaign_rate = figures.get("campaign", {}).get("rate")
    for label, base, factor in (
        ("≥ 1.5x django-post-office", reference, 1.5),
        ("≥ 0.85x smtplib of the same run", smtp, 0.85),
    ):
        target = f"{base * factor:,.0f}/s" if base else "?"
        now = f"{campaign_rate:,.0f}/s" if campaign_rate else "not measured"
        print(f"  {label}: target {target}; campaign {now}")
    if "batch-provider" in args.parts:
        print_batch_provider(args)
    if "bulk" in args.parts:
        bulk = measure_bulk_api(args.bulk_requests, args.bulk_size, args.bulk_api_concurrency)
        print(
            f"  bulk API (issue 17): ≥ {BULK_GOAL:,} recipients accepted/s; "
            f"measured {bulk['rate']:,.0f}/s ({bulk['rate'] / BULK_GOAL:.2f}x the goal)"
        )
    print(f"command: {command}")


def print_batch_provider(args) -> None:
    """The batch-provider part: each size of ``--batch-emails`` (the last with transactional
    sends meanwhile), and the issue's goals."""
    print(f"\nbatch HTTP provider: {', '.join(f'{m:,}' for m in args.batch_emails)} emails")
    runs = [
        measure_batch_provider(
            m,
            args.timeout,
            args.bulk_concurrency,
            transactional=m == args.batch_emails[-1],
        )
        for m in args.batch_emails
    ]
    first, last = runs[0], runs[-1]
    growth = last["peak_rss_mb"] / first["peak_rss_mb"] - 1 if first["peak_rss_mb"] else 0.0
    print("goals (issue 17):")
    print(f"  {last['count']:,} emails under 60 s: {last['seconds']:.1f} s")
    print(
        f"  worker peak RSS within 10 % from {first['count']:,} to {last['count']:,}: "
        f"{first['peak_rss_mb']:.0f} MB -> {last['peak_rss_mb']:.0f} MB ({growth:+.1%})"
    )


if __name__ == "__main__":
    main()
