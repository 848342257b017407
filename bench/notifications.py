"""Notifications throughput: accepted/s through the API at concurrency 32, and end-to-end
deliveries/s to a fake provider with one worker, with p50/p99 from API call to provider call.

    .venv/bin/python bench/notifications.py [--requests 2000] [--concurrency 32] [--web 2]

Runs against real processes: uvicorn (``--web`` processes), one Celery worker (prefork, 2
processes) and the embedded PostgreSQL/Redis (or DATABASE_URL/REDIS_URL). The provider is a local
HTTP server playing SendGrid's API; the real anymail backend calls it. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.core.management import call_command  # noqa: E402

from communication.auth import tokens  # noqa: E402

ARRIVALS: dict[str, float] = {}


class FakeSendGrid(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        arrived = time.time()
        try:
            payload = json.loads(body)
            for p in payload.get("personalizations", []):
                delivery = (p.get("custom_args") or {}).get("delivery_id")
                if delivery:
                    ARRIVALS[delivery] = arrived
            delivery = (payload.get("custom_args") or {}).get("delivery_id")
            if delivery:
                ARRIVALS[delivery] = arrived
        except ValueError:
            pass
        self.send_response(202)
        self.send_header("X-Message-Id", uuid.uuid4().hex)
        self.end_headers()

    def log_message(self, *args):
        pass


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
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


async def fire(base, token, n, concurrency):
    sent: dict[str, float] = {}  # delivery id -> API call start (epoch)
    latencies = []
    errors = 0
    codes: dict[int, int] = {}
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:

        async def one_client():
            nonlocal errors
            while not queue.empty():
                i = queue.get_nowait()
                started_wall, started = time.time(), time.perf_counter()
                r = await client.post(
                    "/api/v1/notifications",
                    json={
                        "recipients": [{"email": f"bench{i}@example.com"}],
                        "category": "alerts",
                        "channels": ["email"],
                        "content": {
                            "subject": "Bench {{ n }}",
                            "body": "Message {{ n }}",
                            "html": "<p>Message <b>{{ n }}</b></p>",
                        },
                        "data": {"n": i},
                    },
                )
                latencies.append(time.perf_counter() - started)
                if r.status_code != 202:
                    errors += 1
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    continue
                delivery = r.json()["notifications"][0]["deliveries"][0]["id"]
                sent[delivery] = started_wall

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if codes:
        print(f"error answers by status: {codes}")
    return sent, latencies, errors, elapsed


def drain(args, env, prefix, worker_argv):
    from django.conf import settings

    from notifications import services

    settings.CELERY_QUEUE_PREFIX = prefix  # this process enqueues where the worker listens
    ids = []
    for i in range(args.requests):
        outcome = services.notification_send(
            caller="bench",
            payload={
                "recipients": [{"email": f"drain{i}@example.com"}],
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
        ids.append(outcome.body["notifications"][0]["deliveries"][0]["id"])
    worker = subprocess.Popen(worker_argv, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 300
        while not ARRIVALS and time.monotonic() < deadline:
            time.sleep(0.01)
        while time.monotonic() < deadline and not all(i in ARRIVALS for i in ids):
            time.sleep(0.05)
        done = [ARRIVALS[i] for i in ids if i in ARRIVALS]
        span = max(done) - min(done)
        print(
            f"drain: {len(done)}/{len(ids)} deliveries by one worker (2 processes) in "
            f"{span:.2f} s = {len(done) / span:.0f} deliveries/s"
        )
    finally:
        worker.terminate()
        worker.wait(20)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--web", type=int, default=2, help="uvicorn processes")
    parser.add_argument("--port", type=int, default=8765)
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
    args = parser.parse_args()

    call_command("migrate", interactive=False, verbosity=0)
    fake = ThreadingHTTPServer(("127.0.0.1", 0), FakeSendGrid)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    prefix = f"bench{uuid.uuid4().hex[:6]}-"
    env = dict(
        os.environ,
        EMAIL_PROVIDERS="sendgrid",
        SENDGRID_API_KEY="SG.bench",
        SENDGRID_API_URL=f"http://127.0.0.1:{fake.server_port}/v3/",
        CELERY_QUEUE_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
        LOG_LEVEL="WARNING",
        WEB_CONCURRENCY=str(args.web),
    )
    worker_argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "communication",
        "worker",
        "-Q",
        ",".join(prefix + q for q in ("realtime", "transactional", "bulk", "default")),
        "--concurrency",
        "2",
        "--loglevel",
        "WARNING",
        "-n",
        f"{prefix}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    if args.drain:
        drain(args, env, prefix, worker_argv)
        fake.shutdown()
        return
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "communication.server", "--port", str(args.port)],
            cwd=ROOT,
            env=env,
        ),
    ]
    if not args.no_worker:
        procs.append(subprocess.Popen(worker_argv, cwd=ROOT, env=env))
    try:
        base = f"http://127.0.0.1:{args.port}"
        wait_http(f"{base}/health/live")
        token = tokens.issue_service_token("bench", ["notifications:send"], ttl=3600)
        # Warm-up: connections, caches, the worker's first task.
        asyncio.run(fire(base, token, 64, 8))
        time.sleep(2)
        ARRIVALS.clear()

        sent, latencies, errors, elapsed = asyncio.run(
            fire(base, token, args.requests, args.concurrency)
        )
        deadline = time.monotonic() + (0 if args.no_worker else 120)
        while time.monotonic() < deadline and not all(d in ARRIVALS for d in sent):
            time.sleep(0.2)
        delivered = [d for d in sent if d in ARRIVALS]
        e2e = [ARRIVALS[d] - sent[d] for d in delivered]

        print(
            f"requests: {args.requests} at concurrency {args.concurrency}, "
            f"{args.web} uvicorn process(es), 1 worker (2 processes)"
        )
        print(
            f"accepted: {len(sent)} ({errors} errors) in {elapsed:.2f} s "
            f"= {len(sent) / elapsed:.0f} accepted/s"
        )
        print(
            f"API latency: p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
        )
        if delivered:
            first, last = min(sent.values()), max(ARRIVALS[d] for d in delivered)
            print(
                f"delivered to the fake provider: {len(delivered)}/{len(sent)} in "
                f"{last - first:.2f} s = {len(delivered) / (last - first):.0f} deliveries/s"
            )
            print(
                f"API call -> provider call: p50 {percentile(e2e, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(e2e, 0.99) * 1000:.0f} ms"
            )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        fake.shutdown()


if __name__ == "__main__":
    main()
