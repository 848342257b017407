"""Messaging latency: message sent → received by every recipient, over the real gateway, beside
a bare Channels relay on the same Redis pub/sub layer measured in the same run.

    .venv/bin/python bench/messaging.py [--clients 200 1000] [--sizes 2 50] [--intervals 5 1]
                                        [--seconds 8] [--procs 4] [--web 1]

For each client count N and conversation size S, N websocket clients are spread over
conversations of S members; each client sends one message every I seconds (N/I messages/s in
all), for ``--seconds`` after a short warm-up, first at I=5 then at I=1. A message's latency is
from the send (wall clock, the client id carries it) to its arrival at each recipient's socket;
"delivered/s" counts arrivals. The gateway's lines also give the sender's acknowledgement
(``message.ack``, sent once the message is on disk; recipients get it once it is committed). The clients run in ``--procs`` processes so that the clients'
own JSON parsing is not what is measured. Runs against the embedded PostgreSQL/Redis (or
DATABASE_URL/REDIS_URL); prints figures, asserts nothing, deletes its users afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
from _proc import cpu_of_commands, cpu_seconds, machine_busy  # noqa: E402  (bench/_proc.py)

from communication.processes import server_argv  # noqa: E402


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# ------------------------------------------------------------------------------ the bare relay


def bare_app():
    """A Channels consumer that only relays: ``{"to": [ids], "payload": …}`` goes to each id's
    group on the same channel layer as the gateway. No auth, no database."""
    import django

    django.setup()
    from channels.generic.websocket import AsyncJsonWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import re_path

    class Relay(AsyncJsonWebsocketConsumer):
        async def connect(self):
            query = self.scope["query_string"].decode()
            self.me = query.split("u=", 1)[1]
            await self.accept()
            await self.channel_layer.group_add(f"bare.{self.me}", self.channel_name)
            await self.send_json({"type": "ready"})

        async def receive_json(self, content, **kwargs):
            event = {"type": "deliver", "event": content["payload"]}
            for to in content["to"]:
                await self.channel_layer.group_send(f"bare.{to}", event)

        async def deliver(self, message):
            await self.send_json(message["event"])

        async def disconnect(self, code):
            await self.channel_layer.group_discard(f"bare.{self.me}", self.channel_name)

    return ProtocolTypeRouter({"websocket": URLRouter([re_path(r"^ws/bare/?$", Relay.as_asgi())])})


def serve_bare(port: int) -> None:
    import uvicorn

    raise_nofile()
    uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")


# ----------------------------------------------------------------------------------- clients


async def client_main(spec: dict, results: mp.Queue) -> None:  # noqa: PLR0915 - one client's life in one place
    import websockets

    latencies: list[float] = []
    acks: list[float] = []  # send → the sender's message.ack (the message is on disk)
    refused: dict[str, int] = {}  # the sender's error events by code (overloaded …)
    count = {"n": 0}
    window = {"start": 0.0, "end": 0.0}
    bare = spec["mode"] == "bare"
    trace: list | None = [] if spec.get("trace") else None

    def refusal(event: dict) -> bool:
        """Whether ``event`` is an error (a refused send), counted by code in the window."""
        if event.get("type") != "error":
            return False
        cid = event.get("client_id") or ""
        sent = int(cid.split(":", 1)[0]) / 1e9 if ":" in cid else 0
        if window["start"] <= sent <= window["end"]:
            code = event.get("code", "?")
            refused[code] = refused.get(code, 0) + 1
        return True

    async def one(member: dict, ready: asyncio.Event, go: asyncio.Event):
        url = (
            f"{spec['ws']}/ws/bare/?u={member['id']}"
            if bare
            else f"{spec['ws']}/ws/v1/?token={member['token']}"
        )
        async with websockets.connect(url, max_queue=None, open_timeout=120) as ws:
            await ws.recv()
            ready.set()

            async def reader():
                try:
                    await read_all()
                except websockets.ConnectionClosed:
                    pass

            async def read_all():
                async for raw in ws:
                    event = json.loads(raw)
                    if bare:
                        cid = event.get("client_id")
                    else:
                        if refusal(event):
                            continue
                        if event.get("type") == "message.ack":
                            sent = int(event["client_id"].split(":", 1)[0]) / 1e9
                            if window["start"] <= sent <= window["end"]:
                                acks.append((time.time() - sent) * 1000)
                            continue
                        if event.get("type") != "message.created":
                            continue
                        data = event["data"]
                        if data["sender"] == member["ext"]:
                            continue
                        cid = data["client_id"]
                    if not cid:
                        continue
                    sent = int(cid.split(":", 1)[0]) / 1e9
                    now = time.time()
                    if window["start"] <= sent <= window["end"]:
                        latencies.append((now - sent) * 1000)
                        if trace is not None:
                            trace.append((sent, (now - sent) * 1000))
                        count["n"] += 1

            task = asyncio.create_task(reader())
            await go.wait()
            interval = spec["interval"]
            await asyncio.sleep(random.random() * interval)
            while time.time() < window["end"]:
                cid = f"{time.time_ns()}:{uuid.uuid4().hex[:8]}"
                if bare:
                    msg = {"to": member["peers"], "payload": {"client_id": cid}}
                else:
                    msg = {
                        "type": "message.send",
                        "conversation_id": member["conv"],
                        "content": "bench",
                        "client_id": cid,
                    }
                await ws.send(json.dumps(msg))
                await asyncio.sleep(interval)
            await asyncio.sleep(spec["drain"])
            task.cancel()

    go = asyncio.Event()
    readies = []
    tasks = []
    for member in spec["members"]:
        ready = asyncio.Event()
        readies.append(ready)
        tasks.append(asyncio.create_task(one(member, ready, go)))
        await asyncio.sleep(0.002)
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
    # The sockets live until the end: out of the collector's reach, a full collection in the
    # load generator does not stall the reads it is timing.
    gc.freeze()
    results.put(("ready", None))
    # Everyone starts at the same wall-clock moment, given by the parent.
    start_at = spec["start_event"].get()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    window["start"] = start_at + spec["warmup"]
    window["end"] = start_at + spec["warmup"] + spec["seconds"]
    go.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if trace:
        with open(f"{spec['trace']}.{spec['mode']}.{os.getpid()}", "w") as f:
            f.writelines(f"{sent:.6f} {ms:.3f}\n" for sent, ms in trace)
    results.put(("done", (latencies, count["n"], acks, refused)))


def client_proc(spec, results):
    import uvloop  # the load generator's own CPU competes with the server's on this machine

    raise_nofile()
    uvloop.run(client_main(spec, results))


# ------------------------------------------------------------------------------------- setup


def make_population(n: int, size: int, tag: str):
    import django

    django.setup()
    from communication.auth import tokens
    from communication.models import User
    from messaging.models import Conversation, Participant

    users = User.objects.bulk_create(
        [User(username=f"bench-{tag}-{i}", external_id=f"bench-{tag}-{i}") for i in range(n)]
    )
    members = []
    convs = []
    parts = []
    for start in range(0, n, size):
        group = users[start : start + size]
        if len(group) < 2:
            break
        if size == 2:
            conv = Conversation(
                type="direct", direct_key=":".join(sorted(str(u.pk) for u in group))
            )
        else:
            conv = Conversation(type="group", title=f"bench {tag}", metadata={"bench": tag})
        convs.append(conv)
        for u in group:
            parts.append(Participant(conversation=conv, user=u, role="member"))
            members.append(
                {
                    "id": str(u.pk),
                    "ext": u.external_id,
                    "token": tokens.issue_user_token(u, ttl=3600),
                    "conv": None,
                    "peers": [str(o.pk) for o in group if o.pk != u.pk],
                    "_conv": conv,
                }
            )
    Conversation.objects.bulk_create(convs)
    Participant.objects.bulk_create(parts)
    for m in members:
        m["conv"] = str(m.pop("_conv").id)
    return members


def cleanup(tag: str) -> None:
    from communication.models import User
    from messaging.models import Conversation

    Conversation.objects.filter(participants__user__username__startswith=f"bench-{tag}-").delete()
    User.objects.filter(username__startswith=f"bench-{tag}-").delete()


def start_server(args, port: int, bare: bool) -> subprocess.Popen:
    if bare:
        cmd = [sys.executable, __file__, "--serve-bare", str(port)]
    else:
        cmd = server_argv(port, host="127.0.0.1", workers=args.web)
    env = dict(os.environ, LOG_LEVEL="WARNING", RATE_LIMITS="off")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if bare:
                import socket

                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return proc
            else:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1):
                    return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def run_phase(args, mode, ws, members, interval, server_pid) -> dict:
    ctx = mp.get_context("spawn")
    # Every client has sent once before the clock starts (each starts at a random point of its
    # interval): a socket's first send, which finds its conversation's members, is not steady state.
    warmup = max(args.warmup, interval)
    results = ctx.Queue()
    chunks = [members[i :: args.procs] for i in range(args.procs)]
    starters = []
    procs = []
    for chunk in chunks:
        start_q = ctx.Queue()
        starters.append(start_q)
        spec = {
            "mode": mode,
            "ws": ws,
            "members": chunk,
            "interval": interval,
            "seconds": args.seconds,
            "warmup": warmup,
            "drain": 2.0,
            "start_event": start_q,
            "trace": args.trace,
        }
        p = ctx.Process(target=client_proc, args=(spec, results))
        p.start()
        procs.append(p)
    t0 = time.time()
    for _ in procs:
        results.get(timeout=600)
    connect_s = time.time() - t0
    # The connection storm's own work (presence, contacts told) settles before the clock starts:
    # what is measured is messaging in steady state.
    start_at = time.time() + args.settle
    for q in starters:
        q.put(start_at)
    time.sleep(max(0.0, start_at + warmup - time.time()))
    cpu_before = cpu_seconds(server_pid)
    clients_before = sum(cpu_seconds(p.pid) for p in procs)
    busy_before, _ = machine_busy()
    stores_before = cpu_of_commands(("postgres", "redis-server"))
    time.sleep(args.seconds)
    stores_used = cpu_of_commands(("postgres", "redis-server")) - stores_before
    machine_used = machine_busy()[0] - busy_before
    cpu_used = cpu_seconds(server_pid) - cpu_before
    clients_used = sum(cpu_seconds(p.pid) for p in procs) - clients_before
    lat: list[float] = []
    acked: list[float] = []
    delivered = 0
    refused: dict[str, int] = {}
    for _ in procs:
        _kind, (values, n, acks, errors) = results.get(timeout=600)
        lat.extend(values)
        acked.extend(acks)
        delivered += n
        for code, count in errors.items():
            refused[code] = refused.get(code, 0) + count
    for p in procs:
        p.join(30)
    return {
        "connect_s": connect_s,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "max": max(lat) if lat else float("nan"),
        "ack_p50": pct(acked, 50),
        "ack_p99": pct(acked, 99),
        "delivered_per_s": delivered / args.seconds,
        "acked_per_s": len(acked) / args.seconds,
        # Sends answered with an error event (overloaded, rate_limited …), per second and code.
        "refused_per_s": {code: n / args.seconds for code, n in refused.items()},
        "sent_per_s": len(members) / interval,
        "mean": statistics.fmean(lat) if lat else float("nan"),
        "cpu_ms_per_msg": cpu_used * 1000 / (args.seconds * len(members) / interval),
        "server_cores": cpu_used / args.seconds,
        "client_cores": clients_used / args.seconds,
        "machine_cores": machine_used / args.seconds,
        "store_cores": stores_used / args.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 50])
    parser.add_argument("--intervals", type=float, nargs="+", default=[5.0, 1.0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds before the clock starts (at least one interval)",
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds between the last connect and the start"
    )
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--web", type=int, default=1, help="uvicorn processes for the gateway")
    parser.add_argument(
        "--trace",
        default="",
        help="write each delivery as `<sent epoch> <latency ms>` to TRACE.<mode>.<pid>",
    )
    parser.add_argument("--serve-bare", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    raise_nofile()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    gw_port, bare_port = free_port(), free_port()
    gateway = start_server(args, gw_port, bare=False)
    bare = start_server(args, bare_port, bare=True)
    rows = []
    try:
        for n in args.clients:
            for size in args.sizes:
                tag = uuid.uuid4().hex[:6]
                members = make_population(n, size, tag)
                try:
                    for mode, port, server in (
                        ("gateway", gw_port, gateway),
                        ("bare", bare_port, bare),
                    ):
                        for interval in args.intervals:
                            r = run_phase(
                                args, mode, f"ws://127.0.0.1:{port}", members, interval, server.pid
                            )
                            row = (n, size, interval, mode, r)
                            rows.append(row)
                            print(
                                f"N={n:<5} size={size:<3} every {interval:>3.0f}s "
                                f"{mode:<8} sent/s={r['sent_per_s']:>6.0f} "
                                f"delivered/s={r['delivered_per_s']:>8.0f} "
                                f"p50={r['p50']:>8.1f} ms p99={r['p99']:>8.1f} ms "
                                f"max={r['max']:>8.1f} ms server CPU/msg="
                                f"{r['cpu_ms_per_msg']:.2f} ms, cores: server "
                                f"{r['server_cores']:.2f} clients {r['client_cores']:.2f} "
                                f"postgres+redis {r['store_cores']:.2f} "
                                f"machine {r['machine_cores']:.2f} "
                                f"(connect {r['connect_s']:.1f}s)"
                                + (
                                    f"; sender's ack p50={r['ack_p50']:.1f} ms "
                                    f"p99={r['ack_p99']:.1f} ms"
                                    if mode == "gateway"
                                    else ""
                                ),
                                flush=True,
                            )
                finally:
                    cleanup(tag)
    finally:
        for proc in (gateway, bare):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
