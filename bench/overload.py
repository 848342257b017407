"""Overload: the messaging gateway's capacity and its behaviour at twice that, beside the bare
Channels relay in the same run; and the send API at a stepped rate.

    .venv/bin/python bench/overload.py [--mode gateway|api|both] [--rates 100 200 300 400 600]
        [--seconds 6] [--clients 1000] [--procs 2] [--api-rates 50 100 200 400]

``gateway``: websocket clients in direct conversations (bench/messaging.py's clients, population
and bare relay, imported) send one message each per interval; the offered rate is stepped up
(``--rates``, messages/s: that many clients sending once a second, or all ``--clients`` sending
faster) until the p99 of message sent → received passes 200 ms or more than 1 % of the sends
are refused. The capacity is the highest rate below both; at twice that rate it reports what
the gateway delivers, the p50/p99 of the messages it admitted and what it refused (error events
by code, per second), beside a gateway whose admission bound is lifted (every send taken, as
before admission control) and the bare relay at the same rates.

``api``: ``POST /api/v1/notifications`` (bench/notifications.py's client and fake provider,
imported) at each of ``--api-rates`` requests/s for ``--seconds``, with one worker
(``--worker-concurrency`` processes): accepted/s, refused (503)/s, other answers, p50/p99 of
all answers. A 503 is the backlog bound's refusal; without one, everything is accepted.

Against the embedded PostgreSQL/Redis (or DATABASE_URL/REDIS_URL). Prints figures, asserts
nothing, deletes its users afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project first (its ``messaging`` and ``notifications`` are the apps), the benches' folder
# after it (their ``_proc``); the benches themselves are imported as ``bench.<name>``.
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")

from bench import messaging as mbench  # noqa: E402
from bench import notifications as nbench  # noqa: E402

P99_BOUND_MS = 200.0
REFUSED_BOUND = 0.01
# Admission lifted: every send is taken at once, as the gateway did before the bound.
UNBOUNDED = {"MESSAGING_WS_MAX_INFLIGHT": "1000000", "MESSAGING_WS_MAX_QUEUED": "0"}


# ------------------------------------------------------------------------------------ gateway


def start_gateway(args, port: int, extra: dict[str, str]) -> subprocess.Popen:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        return mbench.start_server(args, port, bare=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_for(members: list[dict], rate: float) -> tuple[list[dict], float]:
    """(clients, interval) offering ``rate`` messages/s: one a second from ``rate`` clients (an
    even number, whole conversations), or every client, faster."""
    count = min(len(members), max(2, int(rate) // 2 * 2))
    return members[:count], count / rate


def phase(args, mode: str, port: int, server, members, rate: float) -> dict:
    clients, interval = load_for(members, rate)
    result = mbench.run_phase(args, mode, f"ws://127.0.0.1:{port}", clients, interval, server.pid)
    refused = sum(result["refused_per_s"].values())
    result["refused_total_per_s"] = refused
    result["rate"] = rate
    result["clients"] = len(clients)
    return result


def line(label: str, r: dict) -> str:
    refused = ", ".join(f"{c} {n:.0f}/s" for c, n in sorted(r["refused_per_s"].items())) or "none"
    return (
        f"{label:<30} offered {r['sent_per_s']:>6.0f}/s ({r['clients']:>4} clients) "
        f"delivered {r['delivered_per_s']:>6.0f}/s p50 {r['p50']:>7.1f} ms "
        f"p99 {r['p99']:>7.1f} ms  refused: {refused}; cores: server {r['server_cores']:.2f} "
        f"postgres+redis {r['store_cores']:.2f} clients {r['client_cores']:.2f} "
        f"machine {r['machine_cores']:.2f}"
    )


def within(r: dict) -> bool:
    return r["p99"] < P99_BOUND_MS and r["refused_total_per_s"] <= REFUSED_BOUND * r["sent_per_s"]


def gateway_mode(args) -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    most = max(max(args.rates) * 2, args.clients)
    tag = uuid.uuid4().hex[:6]
    members = mbench.make_population(min(most, args.clients), 2, tag)
    ports = {name: args.port_base + i for i, name in enumerate(("gateway", "unbounded", "bare"))}
    servers = {
        "gateway": start_gateway(args, ports["gateway"], {}),
        "unbounded": start_gateway(args, ports["unbounded"], UNBOUNDED),
        "bare": mbench.start_server(args, ports["bare"], bare=True),
    }
    steps: list[dict] = []
    rows: list[tuple[str, dict]] = []
    try:
        # Unreported: the servers' pools, caches and prepared statements warm up first.
        for name in ("gateway", "unbounded"):
            phase(args, "gateway", ports[name], servers[name], members, args.rates[0])
        print(f"stepping the gateway (capacity: p99 < {P99_BOUND_MS:.0f} ms, refused <= 1 %)")
        for rate in args.rates:
            r = phase(args, "gateway", ports["gateway"], servers["gateway"], members, rate)
            steps.append(r)
            print("  " + line(f"gateway at {rate:.0f}/s", r), flush=True)
            if not within(r):
                break
        rate = steps[0]["rate"]
        while not within(steps[-1]) and len(steps) == 1 and rate > 25:
            rate /= 2  # already past it at the first step: step down instead
            steps[0] = phase(args, "gateway", ports["gateway"], servers["gateway"], members, rate)
            print("  " + line(f"gateway at {rate:.0f}/s", steps[0]), flush=True)
        fits = [r for r in steps if within(r)]
        best = fits[-1] if fits else steps[0]
        capacity = best["rate"]
        rows.append(("gateway at capacity", best))
        print(f"capacity: {capacity:.0f} messages/s; twice that, and the references:", flush=True)
        for label, mode, name, rate in (
            ("gateway at 2x", "gateway", "gateway", 2 * capacity),
            ("gateway, no admission, 2x", "gateway", "unbounded", 2 * capacity),
            ("bare relay at capacity", "bare", "bare", capacity),
            ("bare relay at 2x", "bare", "bare", 2 * capacity),
        ):
            r = phase(args, mode, ports[name], servers[name], members, rate)
            rows.append((label, r))
            print("  " + line(label, r), flush=True)
        print("\nside by side:")
        for label, r in rows:
            print("  " + line(label, r))
    finally:
        for proc in servers.values():
            proc.terminate()
        for proc in servers.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        mbench.cleanup(tag)


# ---------------------------------------------------------------------------------------- api


def api_mode(args) -> None:
    from django.core.management import call_command

    from communication.auth import tokens
    from communication.processes import server_argv

    call_command("migrate", interactive=False, verbosity=0)
    nbench.cap_alerts(None)
    fake_port, web_port = args.port_base + 3, args.port_base + 4
    prefix = f"overload{uuid.uuid4().hex[:6]}-"
    env = nbench.service_env(fake_port, prefix)
    bench_file = str(ROOT / "bench" / "notifications.py")
    procs = [
        subprocess.Popen([sys.executable, bench_file, "--serve-fake", str(fake_port)], cwd=ROOT),
        subprocess.Popen(server_argv(web_port, host="127.0.0.1"), cwd=ROOT, env=env),
        subprocess.Popen(
            nbench.worker_command(prefix, args.worker_concurrency),
            cwd=ROOT,
            env=env,
        ),
    ]
    token = tokens.issue_service_token("bench", ["notifications:send"], ttl=3600)
    try:
        nbench.wait_http(f"http://127.0.0.1:{web_port}/health/live")
        time.sleep(3)  # the worker's start
        asyncio.run(nbench.fire(web_port, token, 32, 8, 1))  # warm-up
        print(
            f"send API, one worker ({args.worker_concurrency} processes), "
            f"{args.seconds:.0f} s per step at concurrency {args.api_concurrency}:"
        )
        for rate in args.api_rates:
            codes: dict[int, int] = {}
            arrived = len(nbench.fake_call(fake_port))
            _sent, latencies, _errors, elapsed = asyncio.run(
                nbench.fire(
                    web_port,
                    token,
                    int(rate * args.seconds),
                    args.api_concurrency,
                    1,
                    rate,
                    codes=codes,
                )
            )
            delivered = len(nbench.fake_call(fake_port)) - arrived
            other = {c: n for c, n in codes.items() if c not in (202, 503)}
            print(
                f"  offered {rate:>5.0f}/s: accepted {codes.get(202, 0) / elapsed:>5.0f}/s "
                f"refused (503) {codes.get(503, 0) / elapsed:>5.0f}/s "
                f"other {other or 'none'} "
                f"p50 {nbench.percentile(latencies, 0.5) * 1000:>7.1f} ms "
                f"p99 {nbench.percentile(latencies, 0.99) * 1000:>7.1f} ms; "
                f"delivered meanwhile {delivered / elapsed:>5.0f}/s",
                flush=True,
            )
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("gateway", "api", "both"), default="gateway")
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 200, 300, 400, 600])
    parser.add_argument("--clients", type=int, default=1000, help="most clients connected")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--web", type=int, default=1)
    parser.add_argument(
        "--port-base", type=int, default=8620, help="the servers listen on the next five ports"
    )
    parser.add_argument("--api-rates", type=float, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--api-concurrency", type=int, default=64)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args()
    args.trace = ""
    mbench.raise_nofile()
    import django

    django.setup()
    if args.mode in ("gateway", "both"):
        gateway_mode(args)
    if args.mode in ("api", "both"):
        api_mode(args)


if __name__ == "__main__":
    main()
