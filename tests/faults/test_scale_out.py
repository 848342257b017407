"""Scale-out on one machine: two web nodes (uvicorn processes) and two Celery workers share one
PostgreSQL and one Redis, as several machines would.

- What one node accepts reaches sockets held on the other: a websocket ``message.send`` on A, a
  REST message on B, typing, presence, an in-app notification sent through A's send API; a
  socket that moves to the other node resumes what it missed.
- A batch of sends through both nodes is shared by both workers (each calls the fake SendGrid on
  a base path of its own, so its calls are counted apart), every delivery is called once and
  ends terminal.
- What must be shared is: the HTTP rate limit (one allowance across both nodes), the
  ``Idempotency-Key`` (the same key sent to both nodes at once makes one request) and a
  provider's rate limit (one bucket for both workers).

The fault injected here is the split itself: a client's next request or socket lands on another
process than its last one.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import re
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from rest_framework.test import APIClient
from websockets.sync.client import ClientConnection, connect

from communication.auth import tokens
from communication.models import User
from conftest import LiveServer, Worker, _stop_all, wait_for
from messaging.tests.conftest import recv_until
from tests.faults.harness import TERMINAL, FakeSendGrid, deliveries_of, tally

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.slow,
]

# Reads are limited (the test of the shared allowance); the rest is not, so that the batch and
# the messages are never refused.
READS_PER_MINUTE = 12
RATE_LIMITS = f"send=off,write=off,upload=off,read={READS_PER_MINUTE}/m"
PROVIDER_LATENCY = 0.03  # seconds per SendGrid call: a worker is busy long enough to share
BATCH = 300
# The provider's limit for the two workers together (its burst is as large as its rate).
PROVIDER_RATE = 10
LIMITED_SENDS = 40


@dataclass
class Cluster:
    nodes: list[LiveServer]
    workers: list[Worker]
    provider: FakeSendGrid
    paths: list[str]  # each worker's SendGrid base path, in ``workers`` order


@pytest.fixture(scope="module")
def cluster(start_live_asgi, start_worker, tmp_path_factory):
    """Two web nodes and two workers on the same queues (one prefix), caches, channel layer and
    presence keys: what several machines of one deployment share. Each worker's SendGrid is the
    same fake under a path of its own; the web nodes get one too, which they must never call."""
    prefix = f"so{uuid.uuid4().hex[:6]}-"
    provider = FakeSendGrid(latency=PROVIDER_LATENCY)
    shared = {
        "CACHE_KEY_PREFIX": prefix,
        "CHANNELS_PREFIX": prefix,
        "MESSAGING_PRESENCE_PREFIX": f"{prefix}presence",
    }
    paths = ["/worker1", "/worker2"]
    try:
        node_env = {
            **shared,
            **provider.env(path="/web"),
            "CELERY_QUEUE_PREFIX": prefix,
            "WEB_CONCURRENCY": "1",
            "RATE_LIMITS": RATE_LIMITS,
        }
        # Started side by side: each spends seconds importing Django before it answers. (The
        # run's temporary folder is made first: the threads each make one of their own in it.)
        tmp_path_factory.getbasetemp()
        with ThreadPoolExecutor(4) as pool:
            starting_workers = [
                pool.submit(start_worker, {**shared, **provider.env(path=p)}, prefix) for p in paths
            ]
            starting_nodes = [pool.submit(start_live_asgi, node_env) for _ in range(2)]
            workers = [f.result() for f in starting_workers]
            nodes = [f.result() for f in starting_nodes]
        yield Cluster(nodes, workers, provider, paths)
        # Not left running for the rest of the session (which would stop them at its end).
        _stop_all([process.proc for process in [*nodes, *workers]])
    finally:
        provider.close()


@dataclass
class LimitedWorkers:
    prefix: str
    workers: list[Worker]
    provider: FakeSendGrid
    paths: list[str]


@pytest.fixture(scope="module")
def limited_workers(start_worker, tmp_path_factory):
    """Two more workers (queues of their own) whose SendGrid allows ``PROVIDER_RATE`` calls a
    second: the bucket is in Redis, under the cache prefix both share."""
    prefix = f"sr{uuid.uuid4().hex[:6]}-"
    provider = FakeSendGrid()
    paths = ["/limited1", "/limited2"]
    try:
        env = {"CACHE_KEY_PREFIX": prefix, "SENDGRID_RATE_PER_SECOND": str(PROVIDER_RATE)}
        tmp_path_factory.getbasetemp()
        with ThreadPoolExecutor(2) as pool:
            starting = [
                pool.submit(start_worker, {**env, **provider.env(path=p)}, prefix) for p in paths
            ]
            workers = [f.result() for f in starting]
        yield LimitedWorkers(prefix, workers, provider, paths)
        _stop_all([worker.proc for worker in workers])
    finally:
        provider.close()


# --------------------------------------------------------------------------------------- helpers


def call(node: LiveServer, method: str, path: str, token: str, body=None, headers=None):
    """``(status, decoded body, headers by lower-case name)`` of one request to ``node``."""
    url = urlsplit(node.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=15)
    try:
        conn.request(
            method,
            path,
            json.dumps(body) if body is not None else None,
            {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
        )
        response = conn.getresponse()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, (json.loads(data) if data else None), headers
    finally:
        conn.close()


def make_user(name: str) -> User:
    return User.objects.create(
        username=name, external_id=name, email=f"{name}@example.com", name=name.title()
    )


@contextlib.contextmanager
def socket(node: LiveServer, user: User) -> Iterator[ClientConnection]:
    """A user's websocket on ``node`` (token in the query, as README's Websocket section says),
    once the gateway has answered ``ready``."""
    url = f"{node.ws_url}/ws/v1/?token={tokens.issue_user_token(user)}"
    with connect(url, open_timeout=10) as ws:
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "ready", ready
        yield ws


def created(client_id: str):
    return lambda e: e.get("type") == "message.created" and e["data"].get("client_id") == client_id


def notification_created(notification_id: str):
    return lambda e: e.get("type") == "notification.created" and e["data"]["id"] == notification_id


def presence(user: User, state: str):
    return lambda e: (
        e.get("type") == "presence"
        and e["data"]["user_id"] == user.external_id
        and e["data"]["state"] == state
    )


def at_once(nodes: list[LiveServer], token: str, body: dict, key: str) -> list[tuple]:
    """The answers of one send per node, started together, all with the ``Idempotency-Key``."""
    barrier = threading.Barrier(len(nodes))
    answers: list[tuple] = []

    def send(node: LiveServer) -> None:
        barrier.wait(10)
        answers.append(
            call(node, "POST", "/api/v1/notifications", token, body, {"Idempotency-Key": key})
        )

    threads = [threading.Thread(target=send, args=(node,)) for node in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers


def tasks_received(worker: Worker) -> int:
    return len(
        re.findall(r"notifications\.tasks\.deliver_many\[[^\]]+\] received", worker.log.read_text())
    )


def ms(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p50 = statistics.median(ordered) * 1000
    return f"p50 {p50:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


# ----------------------------------------------------------------------------------------- tests


def conversation(node: LiveServer, owner: User, other: User) -> str:
    status, body, _ = call(
        node,
        "POST",
        "/api/v1/conversations",
        tokens.issue_user_token(owner),
        {"type": "direct", "participants": [other.external_id]},
    )
    assert status in (200, 201), body
    return body["id"]


def send_in_app(node: LiveServer, token: str, user: User, title: str) -> str:
    """An in-app notification to ``user`` through ``node``'s send API; its id."""
    status, body, _ = call(
        node,
        "POST",
        "/api/v1/notifications",
        token,
        {
            "recipients": [{"user_id": user.external_id}],
            "category": "alerts",
            "channels": ["in_app"],
            "content": {"title": title, "body": "Across nodes."},
        },
    )
    assert status == 202, body
    return body["notifications"][0]["id"]


def test_messages_cross_from_one_node_to_sockets_on_the_other(cluster, fault_report):
    a, b = cluster.nodes
    tag = uuid.uuid4().hex[:6]
    alice, bob = make_user(f"alice-{tag}"), make_user(f"bob-{tag}")
    cid = conversation(a, alice, bob)
    rounds = 20
    lines = []

    with socket(a, alice) as on_a:
        with socket(b, bob) as on_b:
            # Presence crosses: bob's socket on B turns him online for alice on A, and A answers
            # a presence query about him from Redis.
            recv_until(on_a, presence(bob, "online"))
            on_a.send(json.dumps({"type": "presence.ping", "user_ids": [bob.external_id]}))
            recv_until(on_a, presence(bob, "online"))

            # node A (websocket message.send) → node B.
            latencies = []
            for i in range(rounds):
                started = time.monotonic()
                on_a.send(
                    json.dumps(
                        {
                            "type": "message.send",
                            "conversation_id": cid,
                            "content": f"from A {i}",
                            "client_id": f"a{i}",
                        }
                    )
                )
                event = recv_until(on_b, created(f"a{i}"))
                latencies.append(time.monotonic() - started)
                assert event["data"]["content"] == f"from A {i}"
            lines.append(
                f"node A (websocket) → socket on node B: {rounds} messages, {len(latencies)} "
                f"received, {ms(latencies)}"
            )

            # node B (REST) → node A.
            bob_token = tokens.issue_user_token(bob)
            latencies = []
            for i in range(rounds):
                started = time.monotonic()
                status, _, _ = call(
                    b,
                    "POST",
                    f"/api/v1/conversations/{cid}/messages",
                    bob_token,
                    {"content": f"from B {i}", "client_id": f"b{i}"},
                )
                assert status == 201
                event = recv_until(on_a, created(f"b{i}"))
                latencies.append(time.monotonic() - started)
                assert event["data"]["content"] == f"from B {i}"
            lines.append(
                f"node B (REST) → socket on node A: {rounds} messages, {len(latencies)} "
                f"received, {ms(latencies)} (the POST included)"
            )

            # Typing, an ephemeral event, crosses as well.
            for state in ("started", "stopped"):
                on_a.send(json.dumps({"type": "typing", "conversation_id": cid, "state": state}))
                event = recv_until(on_b, lambda e: e.get("type") == "typing")
                assert event["data"]["user_id"] == alice.external_id
                assert event["data"]["state"] == state

        # bob's socket on B closes: alice, on A, sees him go offline.
        recv_until(on_a, presence(bob, "offline"))
    lines.append(
        "typing on node A seen on node B; presence online/offline of a socket on B seen on A, "
        "and A's presence query answered from Redis"
    )
    fault_report(*lines)


def test_notifications_cross_nodes_and_a_socket_resumes_on_another_node(
    cluster, make_service_token, fault_report
):
    a, b = cluster.nodes
    bob = make_user(f"bob-{uuid.uuid4().hex[:6]}")
    service = make_service_token("scaleout-in-app")
    rounds = 10
    latencies, seqs = [], []
    with socket(b, bob) as on_b:
        # The send API on node A (in_app) → bob's socket on node B.
        for i in range(rounds):
            started = time.monotonic()
            nid = send_in_app(a, service, bob, f"Notice {i}")
            event = recv_until(on_b, notification_created(nid))
            latencies.append(time.monotonic() - started)
            seqs.append(event["seq"])
    # One gap-free sequence per user, whichever node wrote the events.
    assert seqs == list(range(seqs[0], seqs[0] + rounds))

    # While bob is away, B accepts three more; his next socket lands on A and resumes from the
    # last seq B gave him: A replays exactly those, in order, from the database.
    missed = [send_in_app(b, service, bob, f"Missed {i}") for i in range(3)]
    with socket(a, bob) as back_on_a:
        back_on_a.send(json.dumps({"type": "resume", "after_seq": seqs[-1]}))
        replayed = [recv_until(back_on_a, lambda e: "seq" in e) for _ in missed]
    assert [e["data"]["id"] for e in replayed] == missed
    assert [e["seq"] for e in replayed] == [seqs[-1] + 1, seqs[-1] + 2, seqs[-1] + 3]
    fault_report(
        f"send API on node A (in_app) → socket on node B: {rounds} notifications, "
        f"{len(latencies)} received, {ms(latencies)} (the POST included), seq gap-free",
        f"socket moved from node B to node A: {len(missed)} missed (sent through B), "
        f"{len(replayed)} replayed by A in seq order",
    )


def test_a_batch_through_both_nodes_is_shared_by_both_workers_and_sent_once(
    cluster, make_service_token, fault_report
):
    for worker in cluster.workers:  # a pool that runs tasks: two workers are two consumers
        assert re.search(r"concurrency: \d+ \((solo|prefork)\)", worker.log.read_text())
    provider = cluster.provider
    provider.by_path.clear()
    token = make_service_token("scaleout-batch")
    run = uuid.uuid4().hex[:6]
    accepted: list[str] = []
    statuses: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def client(offset: int, threads: int) -> None:
        # Request i goes to node i % 2: the two nodes alternate within each client.
        for i in range(offset, BATCH, threads):
            status, body, _ = call(
                cluster.nodes[i % 2],
                "POST",
                "/api/v1/notifications",
                token,
                {
                    "recipients": [{"email": f"batch-{run}-{i}@example.com"}],
                    "category": "alerts",
                    "channels": ["email"],
                    "content": {"subject": "Batch {{ n }}", "body": "Message {{ n }}"},
                    "data": {"n": i},
                },
            )
            with lock:
                statuses[str(status)] += 1
                if status == 202:
                    accepted.append(body["request_id"])

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k, 4)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    sent_in = time.monotonic() - started
    assert statuses == {"202": BATCH}, statuses

    def all_terminal():
        found = deliveries_of(accepted)
        return len(found) == BATCH and all(s in TERMINAL for _, s, _ in found)

    wait_for(all_terminal, 60, interval=0.25, what="every delivery to end terminal")
    drained_in = time.monotonic() - started
    result = tally(accepted, provider)
    by_worker = {p: provider.by_path[f"{p}/v3/mail/send"] for p in cluster.paths}
    served = sum(by_worker.values())
    tasks = [tasks_received(w) for w in cluster.workers]
    fault_report(
        f"{BATCH} sends through nodes A and B alternately, provider latency "
        f"{PROVIDER_LATENCY * 1000:.0f} ms: accepted in {sent_in:.1f} s, all terminal in "
        f"{drained_in:.1f} s",
        f"worker 1 served {by_worker['/worker1']} ({tasks[0]} tasks), worker 2 served "
        f"{by_worker['/worker2']} ({tasks[1]} tasks), web nodes called the provider "
        f"{provider.by_path['/web/v3/mail/send']} times",
        result.line(),
    )
    ids = {d for d, _, _ in deliveries_of(accepted)}
    assert set(provider.received) >= ids
    assert all(provider.received[d] == 1 for d in ids), provider.duplicates()
    assert result.lost == 0 and result.duplicated == 0 and result.terminal == BATCH
    assert served == BATCH and provider.by_path["/web/v3/mail/send"] == 0
    # Each worker took a real share, not a straggler's few.
    assert min(by_worker.values()) >= BATCH // 5, by_worker


def test_the_rate_limit_is_one_allowance_across_nodes(cluster, fault_report):
    user = make_user(f"reader-{uuid.uuid4().hex[:6]}")
    token = tokens.issue_user_token(user)
    answers = [
        call(cluster.nodes[i % 2], "GET", "/api/v1/notifications/unread", token)
        for i in range(READS_PER_MINUTE + 2)
    ]
    codes = [status for status, _, _ in answers]
    admitted = codes.count(200)
    fault_report(
        f"read limit {READS_PER_MINUTE}/m, {len(codes)} reads alternating between nodes A and "
        f"B: {admitted} admitted, {codes.count(429)} refused (429)"
    )
    # Per-process counting would admit twice the limit (each node its own allowance).
    assert admitted == READS_PER_MINUTE, codes
    refused = answers[READS_PER_MINUTE:]
    assert all(s == 429 and body["code"] == "rate_limited" for s, body, _ in refused), refused
    assert all("retry-after" in headers for _, _, headers in refused)


def test_one_idempotency_key_sent_to_both_nodes_at_once_makes_one_request(
    cluster, make_service_token, fault_report
):
    token = make_service_token("scaleout-idem")
    body = {
        "recipients": [{"email": "idem-1@example.com"}, {"email": "idem-2@example.com"}],
        "category": "alerts",
        "channels": ["email"],
        "content": {"subject": "Once", "body": "Once only."},
    }
    outcomes: collections.Counter[str] = collections.Counter()
    rounds = 5
    for _ in range(rounds):
        key = uuid.uuid4().hex
        answers = at_once(cluster.nodes, token, body, key)
        assert len(answers) == 2
        firsts = [a for a in answers if a[0] == 202 and "idempotent-replay" not in a[2]]
        assert len(firsts) == 1, [(s, h.get("idempotent-replay")) for s, _, h in answers]
        (other,) = [a for a in answers if a is not firsts[0]]
        if other[0] == 202:
            assert other[2]["idempotent-replay"] == "true"
            assert other[1]["request_id"] == firsts[0][1]["request_id"]
            outcomes["replayed"] += 1
        else:
            assert other[0] == 409 and other[1]["code"] == "idempotency_in_progress", other
            outcomes["409 in progress"] += 1
        # The late one, retried through either node, gets the first answer.
        for node in cluster.nodes:
            status, again, headers = call(
                node, "POST", "/api/v1/notifications", token, body, {"Idempotency-Key": key}
            )
            assert status == 202 and again["request_id"] == firsts[0][1]["request_id"]
            assert headers["idempotent-replay"] == "true"
    fault_report(
        f"{rounds} keys, each sent to nodes A and B at once: one request each "
        f"({', '.join(f'{n} {k}' for k, n in sorted(outcomes.items()))} for the second)"
    )


def test_a_provider_rate_limit_holds_for_both_workers_together(
    limited_workers, make_service_token, settings, fault_report
):
    settings.CELERY_QUEUE_PREFIX = limited_workers.prefix  # what this process enqueues
    provider = limited_workers.provider
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('scaleout-rate')}")
    run = uuid.uuid4().hex[:6]
    tasks_before = [tasks_received(w) for w in limited_workers.workers]
    # Four requests, each its own task at once (no linger to merge them): both workers start.
    settings.DELIVERY_ENQUEUE_LINGER_MS = 0
    request_ids = []
    for part in range(4):
        response = client.post(
            "/api/v1/notifications",
            {
                "recipients": [
                    {"email": f"rate-{run}-{part}-{i}@example.com"}
                    for i in range(LIMITED_SENDS // 4)
                ],
                "category": "alerts",
                "channels": ["email"],
                "content": {"subject": "Paced", "body": "Paced."},
            },
            format="json",
        )
        assert response.status_code == 202, response.content
        request_ids.append(response.json()["request_id"])

    def all_terminal():
        found = deliveries_of(request_ids)
        return len(found) == LIMITED_SENDS and all(s in TERMINAL for _, s, _ in found)

    wait_for(all_terminal, 60, interval=0.25, what="every paced delivery to end terminal")
    result = tally(request_ids, provider)
    times = sorted(provider.arrivals)
    span = times[-1] - times[0]
    peak = max(sum(1 for u in times if t <= u < t + 1) for t in times)
    by_worker = {p: provider.by_path[f"{p}/v3/mail/send"] for p in limited_workers.paths}
    tasks = [
        tasks_received(w) - n for w, n in zip(limited_workers.workers, tasks_before, strict=True)
    ]
    fault_report(
        f"SendGrid limited to {PROVIDER_RATE}/s (burst {PROVIDER_RATE}) for two workers, "
        f"{LIMITED_SENDS} sends: calls spread over {span:.1f} s, at most {peak} in any second",
        f"worker 1 called {by_worker['/limited1']} times ({tasks[0]} tasks), worker 2 "
        f"{by_worker['/limited2']} ({tasks[1]} tasks; a task each time a delivery was put back)",
        result.line(),
    )
    assert result.lost == 0 and result.duplicated == 0 and result.terminal == LIMITED_SENDS
    assert all(by_worker[p] for p in limited_workers.paths), by_worker
    # One bucket for both: the calls past the burst took at least their share of seconds, and
    # no second held more than a burst and a second's worth (two buckets would allow twice).
    assert span >= (LIMITED_SENDS - PROVIDER_RATE) / PROVIDER_RATE - 0.5, span
    assert peak <= 2 * PROVIDER_RATE + 2, peak
