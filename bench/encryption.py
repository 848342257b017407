"""What encryption at rest costs on the two hot paths: a chat message send and a notification
send, each through the API, with and without encryption in the same run.

    .venv/bin/python bench/encryption.py [--messages 1000] [--notifications 500]
        [--compare <git-ref>] [--runs 2]

Run from the repository root. Creates a scratch database (``bench_encryption_<tree>``: created,
migrated and dropped here, on the server of DATABASE_URL or the embedded one). The messages are
``POST /api/v1/conversations/{id}/messages`` of one member of a three-member conversation; the
notifications are ``POST /api/v1/notifications`` to an email address and a user's inbox: the
request, notifications, deliveries and inbox events written and the delivery tasks published
(to queues of their own, deleted afterwards; ``bench/notifications.py --compare`` measures the
delivery side with a worker). Also prints the AES-256-GCM cost of one value, encrypted and
decrypted.

``--compare REF`` runs this script on REF's code too (a worktree of its own, ``bench/_compare``),
alternating, ``--runs`` times each: with REF a commit from before the encryption, its figures are
the "without". Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = Path.cwd()  # the tree measured: this checkout, or a --compare worktree
QUEUES = "bench-encryption-"
_FIGURES = {
    "message send": r"message send\s+([\d.]+) ms",
    "notification send": r"notification send\s+([\d.]+) ms",
}


def measure(args) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["CELERY_QUEUE_PREFIX"] = QUEUES
    import django

    django.setup()
    from django.conf import settings
    from django.db import connections
    from django.test.utils import setup_databases, teardown_databases

    scratch = f"bench_encryption_{abs(hash(str(ROOT))) % 10**8}"
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = scratch
    settings.CACHES["default"]["KEY_PREFIX"] = scratch
    settings.RATE_LIMITS = "off"
    config = setup_databases(verbosity=0, interactive=False)
    try:
        _crypto_figure()
        _paths(args)
    finally:
        connections.close_all()
        teardown_databases(config, verbosity=0)
        _drop_queues(settings.CELERY_BROKER_URL)


def _drop_queues(broker: str) -> None:
    if not broker.startswith("redis"):
        return
    import redis

    client = redis.Redis.from_url(broker)
    for key in client.scan_iter(f"{QUEUES}*"):
        client.delete(key)


def _crypto_figure() -> None:
    try:
        from communication.fields import decrypt, encrypt
    except ImportError:
        return
    value = ("Lunch at noon? " * 14).encode()[:200]
    n = 20000
    started = time.perf_counter()
    for _ in range(n):
        decrypt(encrypt(value))
    spent = time.perf_counter() - started
    print(f"  AES-256-GCM, 200 bytes  {spent / n * 1e6:8.1f} µs encrypt + decrypt")


def _paths(args) -> None:
    from rest_framework.test import APIClient

    from communication.auth.tokens import issue_service_token, issue_user_token
    from communication.models import User

    users = [
        User.objects.create(username=f"b{i}", external_id=f"bench-{i}", email=f"b{i}@example.org")
        for i in range(3)
    ]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_user_token(users[0])}")
    made = client.post(
        "/api/v1/conversations",
        {"type": "group", "title": "bench", "participants": ["bench-1", "bench-2"]},
        format="json",
    )
    assert made.status_code in (200, 201), made.content
    url = f"/api/v1/conversations/{made.json()['id']}/messages"
    text = "Are we still on for the review at 3pm? I moved the notes to the shared folder."

    def send_message(i: int) -> None:
        response = client.post(url, {"content": f"{text} #{i}"}, format="json")
        assert response.status_code in (200, 201), response.content

    service = APIClient()
    token = issue_service_token("bench", ["notifications:send"])
    service.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    def send_notification(i: int) -> None:
        response = service.post(
            "/api/v1/notifications",
            {
                "recipients": [{"email": f"reader{i}@example.org"}, {"user_id": "bench-1"}],
                "channels": ["email", "in_app"],
                "content": {
                    "subject": f"Invoice {i}",
                    "title": f"Invoice {i}",
                    "body": f"Your invoice {i} is ready.",
                },
            },
            format="json",
        )
        assert response.status_code == 202, response.content

    for name, fn, count in (
        ("message send", send_message, args.messages),
        ("notification send", send_notification, args.notifications),
    ):
        for i in range(20):  # warm-up: connections, caches, plans
            fn(-1 - i)
        times = []
        for i in range(count):
            started = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - started)
        times.sort()
        print(
            f"  {name:<22} {statistics.mean(times) * 1000:6.2f} ms mean, "
            f"p50 {times[len(times) // 2] * 1000:.2f}, p95 {times[int(len(times) * 0.95)] * 1000:.2f}"
            f" ({count} sends)"
        )


def compare(args) -> None:
    sys.path.insert(0, str(HERE))
    import _compare

    tree, python = _compare.checkout(args.compare)
    passed = ["--messages", str(args.messages), "--notifications", str(args.notifications)]
    sides = {
        f"{args.compare} ({tree.name})": (python, tree),
        "this checkout": (sys.executable, ROOT),
    }
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    env = {**os.environ, "PYTHONPATH": ""}
    for run in range(args.runs):
        for side, (python, cwd) in sides.items():
            print(f"run {run + 1}/{args.runs}, {side}:", flush=True)
            out = _compare.run(python, cwd, str(HERE / "encryption.py"), passed, env)
            results[side].append({k: _compare.number(p, out) for k, p in _FIGURES.items()})
    print("\nmean of the runs (ms per send, lower is better):")
    print(f"  {'':<22}" + "".join(f"{side:>34}" for side in sides))
    for figure in _FIGURES:
        row = [statistics.mean(r[figure] for r in results[side]) for side in sides]
        print(f"  {figure:<22}" + "".join(f"{v:>34.2f}" for v in row))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--notifications", type=int, default=500)
    parser.add_argument("--compare", metavar="REF", help="also measure this git ref, alternating")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.compare:
        compare(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
