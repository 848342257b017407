"""Notifications throughput: accepted/s through the API at concurrency 32, and end-to-end
deliveries/s to a fake provider with one worker, with p50/p99 from API call to provider call.

    .venv/bin/python bench/notifications.py [--requests 2000] [--concurrency 32] [--web 1]
        [--recipients 1] [--worker-concurrency 4] [--rate R] [--no-worker | --drain]
        [--cap LIMIT/PERIOD] [--compare <git-ref> [--runs 3]]

Runs against real processes: uvicorn (``--web`` processes), one Celery worker (prefork,
``--worker-concurrency`` processes, 4 by default: each waits for the provider's answer between
sends, and two left the machine's two cores idle meanwhile) and the embedded PostgreSQL/Redis
(or DATABASE_URL/REDIS_URL). The provider is a fake SendGrid in its own process (a bare asyncio
server); the real anymail backend calls it. The load generator is a plain asyncio HTTP/1.1 keep-alive
client, so that the figures are the service's, not the client's. ``--recipients N`` puts N
recipients in each request (reported as requests/s and as notifications/s); ``--rate R``
offers at most R requests/s (the latency at a given load, rather than at the most the API
accepts). ``--compare REF`` runs the same measurement on REF's code (a worktree of its own, see
``bench/_compare.py``) and on this checkout, alternating, ``--runs`` times each, and prints
both side by side with their ratio. ``--cap 1000/7d`` gives the category sent (``alerts``) a
frequency cap on email that no recipient reaches, so that every delivery pays for keeping it
(``notifications.services.caps``); with ``--compare`` only this checkout runs capped, and the ratio
is what keeping caps costs. Rate limits are off in every run. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from _proc import cpu_of_commands, cpu_seconds, machine_busy  # bench/_proc.py

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------- the fake provider


_DELIVERY_ID = re.compile(rb'"delivery_id":\s*"([^"]+)"')


class FakeSendGrid(asyncio.Protocol):
    """A fake SendGrid (``POST /v3/mail/send``) on a bare asyncio protocol: it notes when each
    delivery arrived; ``GET /arrivals`` answers them, ``DELETE /arrivals`` forgets them.

    It shares the machine with the service, so it does as little as an HTTP/1.1 keep-alive
    server can (0.08 ms of CPU per call; an aiohttp version took 0.23 ms): the real
    provider's work happens on someone else's machine."""

    arrivals: dict[str, float] = {}

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            self.answer(head.split(b" ", 2), body)

    def answer(self, request_line, body):
        method, path = request_line[0], request_line[1]
        if method == b"POST" and path.endswith(b"/mail/send"):
            arrived = time.time()
            for delivery in _DELIVERY_ID.findall(body):
                self.arrivals[delivery.decode()] = arrived
            self.reply(202, b"", f"X-Message-Id: {uuid.uuid4().hex}\r\n")
        elif path == b"/arrivals":
            if method == b"DELETE":
                self.arrivals.clear()
            self.reply(
                200, json.dumps(self.arrivals).encode(), "Content-Type: application/json\r\n"
            )
        else:
            self.reply(404, b"", "")

    def reply(self, status: int, body: bytes, headers: str):
        self.transport.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body
        )


def serve_fake(port: int) -> None:
    """Runs :class:`FakeSendGrid` on ``port`` (in a process of its own)."""

    async def serve():
        server = await asyncio.get_running_loop().create_server(FakeSendGrid, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def fake_call(port: int, method: str = "GET") -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/arrivals", method=method)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


# ---------------------------------------------------------------------- the load generator


class Connection:
    """One HTTP/1.1 keep-alive connection: the cheapest client asyncio allows."""

    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status = int((await self.reader.readline()).split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and value == b"chunked":
                chunked = True
            elif name == b"connection" and value == b"close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            data = b"".join(parts)
        else:
            data = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, data

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def request_body(i: int, recipients: int) -> bytes:
    return json.dumps(
        {
            "recipients": [{"email": f"bench{i}-{j}@example.com"} for j in range(recipients)],
            "category": "alerts",
            "channels": ["email"],
            "content": {
                "subject": "Bench {{ n }}",
                "body": "Message {{ n }}",
                "html": "<p>Message <b>{{ n }}</b></p>",
            },
            "data": {"n": i},
        }
    ).encode()


async def fire(port, token, n, concurrency, recipients, rate=0.0, codes=None):
    """``n`` requests from ``concurrency`` clients, as fast as they are answered, or with
    ``rate`` at most that many per second (request i not before i / rate s). ``codes``: a dict
    to fill with the count of answers by status."""
    sent: dict[str, float] = {}  # delivery id -> API call start (epoch)
    latencies = []
    codes = {} if codes is None else codes
    bodies = [request_body(i, recipients) for i in range(n)]
    pending = iter(range(n))
    begin = time.perf_counter()

    async def one_client():
        connection = Connection(port, token)
        try:
            for i in pending:
                if rate:
                    await asyncio.sleep(max(begin + i / rate - time.perf_counter(), 0))
                started_wall, started = time.time(), time.perf_counter()
                status, data = await connection.request("POST", "/api/v1/notifications", bodies[i])
                latencies.append(time.perf_counter() - started)
                codes[status] = codes.get(status, 0) + 1
                if status != 202:
                    continue
                for notification in json.loads(data)["notifications"]:
                    for delivery in notification["deliveries"]:
                        sent[delivery["id"]] = started_wall
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    errors = sum(v for k, v in codes.items() if k != 202)
    if errors:
        print(f"answers by status: {codes}")
    return sent, latencies, errors, elapsed


def service_env(fake_port: int, prefix: str, **more: str) -> dict[str, str]:
    """The web process's and worker's environment: email to the fake SendGrid on ``fake_port``,
    queues and cache keys of their own (``prefix``), and no rate limits (the benches measure the
    send path, not its limits)."""
    return dict(
        os.environ,
        EMAIL_PROVIDERS="sendgrid",
        SENDGRID_API_KEY="SG.bench",
        SENDGRID_API_URL=f"http://127.0.0.1:{fake_port}/v3/",
        CELERY_QUEUE_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
        LOG_LEVEL="WARNING",
        RATE_LIMITS="off",
        **more,
    )


def worker_command(prefix: str, concurrency: int) -> list[str]:
    """A worker on every queue of ``prefix``."""
    from communication.processes import worker_argv

    return worker_argv(
        queues=",".join(prefix + q for q in ("realtime", "transactional", "bulk", "default")),
        name=f"{prefix}@%h",
        loglevel="WARNING",
        concurrency=concurrency,
    )


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def wait_http(url, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_arrivals(fake_port, ids, timeout) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        arrivals = fake_call(fake_port)
        if all(i in arrivals for i in ids) or time.monotonic() >= deadline:
            return arrivals
        time.sleep(0.25)


# ----------------------------------------------------------------------------------- modes


def drain(args, env, prefix, worker_argv, fake_port):
    from django.conf import settings

    from notifications import services

    settings.CELERY_QUEUE_PREFIX = prefix  # this process enqueues where the worker listens
    ids = []
    for i in range(args.requests):
        outcome = services.notification_send(
            caller="bench",
            payload={
                "recipients": [
                    {"email": f"drain{i}-{j}@example.com"} for j in range(args.recipients)
                ],
                "category": "alerts",
                "channels": ["email"],
                "data": {"n": i},
                "content": {
                    "subject": "Bench {{ n }}",
                    "body": "Message {{ n }}",
                    "html": "<p>Message <b>{{ n }}</b></p>",
                },
            },
        )
        ids += [n["deliveries"][0]["id"] for n in outcome.body["notifications"]]
    worker = subprocess.Popen(worker_argv, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 300
        while not fake_call(fake_port) and time.monotonic() < deadline:
            time.sleep(0.05)
        arrivals = wait_arrivals(fake_port, ids, max(deadline - time.monotonic(), 0))
        done = [arrivals[i] for i in ids if i in arrivals]
        span = max(done) - min(done)
        print(
            f"drain: {len(done)}/{len(ids)} deliveries by one worker "
            f"({args.worker_concurrency} processes) in "
            f"{span:.2f} s = {len(done) / span:.0f} deliveries/s"
        )
    finally:
        worker.terminate()
        worker.wait(20)


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--web", type=int, default=1, help="uvicorn processes (1, the service's default)"
    )
    parser.add_argument(
        "--worker-concurrency", type=int, default=4, help="the worker's prefork processes"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="offer at most this many requests/s (default: as fast as they are answered)",
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--recipients", type=int, default=1, help="recipients per request (default 1)"
    )
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="measure the API alone (deliveries wait in the queue)",
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="the worker alone: queue --requests deliveries first, then time one worker",
    )
    parser.add_argument(
        "--compare", metavar="REF", help="also measure this git ref, alternating with this code"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each side with --compare")
    parser.add_argument(
        "--cap",
        metavar="LIMIT/PERIOD",
        help="an email frequency cap on the category sent, e.g. 1000/7d (this checkout only)",
    )
    parser.add_argument("--serve-fake", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


_FIGURES = {
    "accepted/s": r"= (\d+) requests/s",
    "API p99 ms": r"API latency: .*p99 ([\d.]+) ms",
    "e2e p50 ms": r"provider call: p50 (\d+) ms",
    "e2e p99 ms": r"provider call: p50 \d+ ms, p99 (\d+) ms",
    "web CPU ms/notification": r"web ([\d.]+) ms",
    "deliveries/s": r"delivered to the fake provider: .* = (\d+) deliveries/s",
    "worker CPU ms/notification": r"worker ([\d.]+) ms",
    "postgres CPU ms/notification": r"postgres ([\d.]+) ms",
    "drain deliveries/s": r"drain: .* = (\d+) deliveries/s",
}


def compare(args) -> None:
    """This benchmark on ``args.compare`` and on this checkout, alternating."""
    import _compare  # bench/_compare.py

    tree, python = _compare.checkout(args.compare)
    passed = []
    skip = False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--compare", "--runs", "--cap"):
            skip = True
        elif not arg.startswith(("--compare=", "--runs=", "--cap=")):
            passed.append(arg)
    # Each side on its own embedded servers: the two schemas may differ.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VAR_DIR", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    }
    env["RATE_LIMITS"] = "off"
    # A cap is this checkout's alone: the ref runs without (it may not know the option).
    capped = [f"--cap={args.cap}"] if args.cap else []
    sides = {
        f"{args.compare} ({tree.name})": (python, tree, []),
        "this checkout" + (f" (cap {args.cap})" if args.cap else ""): (
            sys.executable,
            ROOT,
            capped,
        ),
    }
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for n in range(args.runs):
        for side, (py, cwd, extra) in sides.items():
            print(f"--- run {n + 1}/{args.runs}: {side}", flush=True)
            out = _compare.run(py, cwd, "bench/notifications.py", [*passed, *extra], env)
            results[side].append({k: _compare.number(p, out) for k, p in _FIGURES.items()})
    ref_runs, new_runs = results.values()
    print(f"\n{'':26}" + "".join(f"{side[:24]:>26}" for side in results) + f"{'ratio':>8}")
    for figure in _FIGURES:
        ref = [r[figure] for r in ref_runs]
        new = [r[figure] for r in new_runs]
        ref_median, new_median = sorted(ref)[len(ref) // 2], sorted(new)[len(new) // 2]
        cells = [" ".join(f"{v:g}" for v in values) for values in (ref, new)]
        print(
            f"{figure:26}"
            + "".join(f"{cell[:24]:>26}" for cell in cells)
            + f"{new_median / ref_median if ref_median else float('nan'):8.2f}"
        )
    print("(each cell: the runs in order; ratio: median of this checkout / median of the ref)")


def main():
    args = parse_args()
    if args.serve_fake:
        serve_fake(args.serve_fake)
        return
    if args.compare:
        compare(args)
        return

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from communication.auth import tokens
    from communication.processes import server_argv

    call_command("migrate", interactive=False, verbosity=0)
    cap_alerts(args.cap)
    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, __file__, "--serve-fake", str(fake_port)], cwd=ROOT)
    prefix = f"bench{uuid.uuid4().hex[:6]}-"
    env = service_env(fake_port, prefix, WEB_CONCURRENCY=str(args.web))
    worker_cmd = worker_command(prefix, args.worker_concurrency)
    procs = [fake]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                fake_call(fake_port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if args.drain:
            drain(args, env, prefix, worker_cmd, fake_port)
            return
        roles = {"fake provider": fake.pid}
        procs.append(subprocess.Popen(server_argv(args.port), cwd=ROOT, env=env))
        roles["web"] = procs[-1].pid
        if not args.no_worker:
            procs.append(subprocess.Popen(worker_cmd, cwd=ROOT, env=env))
            roles["worker"] = procs[-1].pid
        measure(
            args,
            fake_port,
            tokens.issue_service_token("bench", ["notifications:send"], ttl=3600),
            roles,
        )
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def cap_alerts(cap: str | None) -> None:
    """The sent category's email cap: ``LIMIT/PERIOD``, or none (the data outlives a run)."""
    from communication.models import Category

    caps = {}
    if cap:
        limit, period = cap.split("/")
        caps = {"email": {"limit": int(limit), "period": period}}
    category = Category.objects.get(key="alerts")
    category.frequency_caps = caps
    category.full_clean()
    category.save()
    print(f"frequency cap on alerts: {caps or 'none'}")


def cpu_snapshot(roles: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each role's process tree, of PostgreSQL and Redis, and of the
    whole machine."""
    used = {role: cpu_seconds(pid) for role, pid in roles.items()}
    used["load generator"] = time.process_time()  # this process alone, not its children
    used["postgres"] = cpu_of_commands(("postgres",))
    used["redis"] = cpu_of_commands(("redis-server",))
    used["machine"] = machine_busy()[0]
    return used


def measure(args, fake_port, token, roles):
    wait_http(f"http://127.0.0.1:{args.port}/health/live")
    # Warm-up: connections, caches, the worker's first task.
    asyncio.run(fire(args.port, token, 64, 8, args.recipients))
    time.sleep(2)
    fake_call(fake_port, "DELETE")

    cpu_before = cpu_snapshot(roles)
    sent, latencies, errors, elapsed = asyncio.run(
        fire(args.port, token, args.requests, args.concurrency, args.recipients, args.rate)
    )
    arrivals = wait_arrivals(fake_port, sent, 0 if args.no_worker else 180)
    cpu_used = {k: v - cpu_before[k] for k, v in cpu_snapshot(roles).items()}
    delivered = [d for d in sent if d in arrivals]
    e2e = [arrivals[d] - sent[d] for d in delivered]

    accepted = args.requests - errors
    print(
        f"requests: {args.requests} at concurrency {args.concurrency}, "
        f"{args.recipients} recipient(s) each, {args.web} uvicorn process(es), "
        + (f"offered at {args.rate:g}/s, " if args.rate else "")
        + ("no worker" if args.no_worker else f"1 worker ({args.worker_concurrency} processes)")
    )
    print(
        f"accepted requests: {accepted} ({errors} errors) in {elapsed:.2f} s "
        f"= {accepted / elapsed:.0f} requests/s"
    )
    print(
        f"accepted notifications: {len(sent)} = {len(sent) / elapsed:.0f} notifications/s"
        + (" (= accepted/s)" if args.recipients == 1 else "")
    )
    print(
        f"API latency: p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
    )
    if delivered:
        first, last = min(sent.values()), max(arrivals[d] for d in delivered)
        print(
            f"delivered to the fake provider: {len(delivered)}/{len(sent)} in "
            f"{last - first:.2f} s = {len(delivered) / (last - first):.0f} deliveries/s"
        )
        print(
            f"API call -> provider call: p50 {percentile(e2e, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(e2e, 0.99) * 1000:.0f} ms"
        )
    if sent:
        print(
            "CPU per notification: "
            + ", ".join(
                f"{role} {used * 1000 / len(sent):.2f} ms" for role, used in cpu_used.items()
            )
        )


if __name__ == "__main__":
    main()
