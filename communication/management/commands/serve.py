"""``manage.py serve``: the whole service on one machine.

Starts (or shares) the embedded PostgreSQL and Redis unless ``DATABASE_URL`` / ``REDIS_URL`` name
servers, applies migrations, writes the periodic schedules, creates a development admin once, then
runs the ASGI server, two Celery workers (one for the bulk queue alone) and celery beat as supervised
children (restarted if they die).
The Prometheus metrics folder (``PROMETHEUS_MULTIPROC_DIR``) is emptied before the children start,
and a child's live gauges are dropped when it exits.
On Ctrl-C or SIGTERM it stops the children, then the embedded servers, explicitly: exit hooks do not
run on a signal, and nothing may be left behind.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from prometheus_client import multiprocess

from communication import embedded
from communication.auth import keys, tokens
from communication.celery import queue, queue_list
from communication.models import User
from communication.processes import beat_argv, server_argv, worker_argv

PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    # Own session: a Ctrl-C to the terminal reaches serve only, which stops children in order.
    os.setsid()
    # If serve itself is killed (SIGKILL), the kernel still tells each child to stop.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class Child:
    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.next_start = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, preexec_fn=_child_setup)  # noqa: PLW1509

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def reap_group(self) -> None:
        """Kills what the child may have left in its process group (e.g. prefork pool workers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _empty_metrics_dir() -> None:
    """Removes every process's metrics file (``analytics.metrics`` reads them)."""
    folder = settings.PROMETHEUS_MULTIPROC_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("*.db"):
        path.unlink(missing_ok=True)


def _forget(child: Child) -> None:
    """Drops the live gauges (open sockets …) of a child that exited; its counters stay, so that
    the sums a scrape reads never go back."""
    if child.proc is not None:
        multiprocess.mark_process_dead(child.proc.pid, str(settings.PROMETHEUS_MULTIPROC_DIR))


class Command(BaseCommand):
    help = "Run the web server, a Celery worker and celery beat (and the embedded servers)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--concurrency", type=int, default=int(os.environ.get("WORKER_CONCURRENCY", "2"))
        )
        parser.add_argument(
            "--bulk-concurrency",
            type=int,
            default=int(os.environ.get("WORKER_BULK_CONCURRENCY", "1")),
        )
        parser.add_argument("--no-worker", action="store_true")
        parser.add_argument("--no-beat", action="store_true")

    def handle(self, *args, **opts):
        self.stopping = False
        # Line by line even into a pipe or a file: an operator (or a test) reads the banner live.
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(line_buffering=True)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        host, port = opts["host"], opts["port"]
        self._check_port_free(host, port)

        try:
            self._prepare()
            # Files of an earlier run would add to this one's counters, and a new child reusing
            # an old pid would carry on from its figures.
            _empty_metrics_dir()
            children = self._children(host, port, opts)
            for child in children:
                child.start()
            base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
            if self._wait_ready(base, children):
                self._banner(base)
            self._supervise(children)
        finally:
            self._shutdown(locals().get("children", []))

    # --------------------------------------------------------------------------------- phases

    def _on_signal(self, signum, frame):
        if self.stopping:
            return
        self.stopping = True
        self.stdout.write(f"\nserve: {signal.Signals(signum).name} received, stopping…")

    def _check_port_free(self, host: str, port: int) -> None:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                raise CommandError(f"{host}:{port} is not available ({exc}); set PORT") from exc

    def _prepare(self) -> None:
        status = embedded.status()
        if not os.environ.get("EMBEDDED_SERVERS_OWNER"):
            self.stdout.write("serve: using DATABASE_URL / REDIS_URL from the environment")
        else:
            self.stdout.write(
                f"serve: embedded PostgreSQL pid {status['postgres'] or '-'}, "
                f"Redis pid {status['redis'] or '-'} (data in {settings.VAR_DIR})"
            )
        call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_schedules", verbosity=0)
        if settings.DEVELOPMENT:
            self._dev_admin()

    def _dev_admin(self) -> None:
        username = settings.DEV_ADMIN_USERNAME
        secret_file = settings.VAR_DIR / "dev_admin_password"
        if not User.objects.filter(username=username).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser(username=username, email="", password=password)
            secret_file.write_text(password + "\n")
            secret_file.chmod(0o600)
            self.stdout.write(f"serve: created the development admin '{username}'")
        self.admin_hint = (
            f"user '{username}', password in {secret_file}"
            if secret_file.exists()
            else f"user '{username}' (password set by you)"
        )

    def _children(self, host: str, port: int, opts) -> list[Child]:
        children = [Child("web", server_argv(port, host=host))]
        if not opts["no_worker"]:
            # The bulk queue (low-priority sends, campaigns' fan-out) has a worker of its own, so
            # that a long bulk run never holds the processes transactional traffic needs.
            children += [
                Child(
                    "worker",
                    worker_argv(
                        queues=queue_list(exclude=("bulk",)),
                        name=f"worker-{os.getpid()}@%h",
                        concurrency=opts["concurrency"],
                    ),
                ),
                Child(
                    "worker-bulk",
                    worker_argv(
                        queues=queue("bulk"),
                        name=f"bulk-{os.getpid()}@%h",
                        concurrency=opts["bulk_concurrency"],
                    ),
                ),
            ]
        if not opts["no_beat"]:
            children.append(Child("beat", beat_argv()))
        return children

    def _wait_ready(self, base: str, children: list[Child]) -> bool:
        deadline = time.monotonic() + 60
        while not self.stopping and time.monotonic() < deadline:
            if not children[0].alive():
                raise CommandError("the web server exited during start-up (see its log above)")
            try:
                with urllib.request.urlopen(f"{base}/health/live", timeout=1) as r:
                    if r.status == 200:
                        return True
            except OSError:
                time.sleep(0.2)
        return False

    def _banner(self, base: str) -> None:
        lines = [
            "",
            "Communication Service is running:",
            f"  API docs   {base}/api/docs/",
            f"  admin      {base}/admin/   ({getattr(self, 'admin_hint', 'staff account')})",
            f"  health     {base}/health/ready",
            f"  websocket  {base.replace('http', 'ws', 1)}/ws/v1/?token=<jwt>",
        ]
        if settings.DEVELOPMENT:
            if keys.dev_mode():
                token = tokens.issue_service_token(
                    "dev-service",
                    [
                        "notifications:send",
                        "notifications:read",
                        "templates:manage",
                        "templates:render",
                        "campaigns:manage",
                        "users:read",
                        "analytics:read",
                    ],
                    ttl=86400,
                )
                lines += [
                    "  development service token (24 h; more with manage.py issue_token):",
                    f"    {token}",
                    "  demo data: python manage.py seed_demo, then sign in as a demo user at /app/",
                ]
        lines.append("Press Ctrl-C to stop.")
        self.stdout.write("\n".join(lines))

    def _supervise(self, children: list[Child]) -> None:
        while not self.stopping:
            now = time.monotonic()
            for child in children:
                if child.alive() or now < child.next_start:
                    continue
                if child.proc is not None and child.next_start == 0.0:
                    code = child.proc.returncode
                    child.reap_group()
                    _forget(child)
                    child.restarts += 1
                    delay = min(2 ** min(child.restarts, 5), 30)
                    child.next_start = now + delay
                    self.stderr.write(f"serve: {child.name} exited ({code}); restart in {delay}s")
                    continue
                child.next_start = 0.0
                child.start()
            time.sleep(0.5)

    def _shutdown(self, children: list[Child]) -> None:
        # Web first (no new work), then beat, then the worker, which finishes what it holds.
        order = sorted(children, key=lambda c: {"web": 0, "beat": 1}.get(c.name, 2))
        for child in order:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for child in order:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"serve: {child.name} did not stop in time; killing it")
                child.proc.kill()
                child.proc.wait()
            child.reap_group()
            _forget(child)
        if os.environ.get("EMBEDDED_SERVERS_OWNER") == str(os.getpid()):
            embedded.release()
            self.stdout.write("serve: embedded servers released")
        self.stdout.write("serve: stopped")
