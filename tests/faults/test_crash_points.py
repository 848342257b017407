"""Fault scenario 1: the process dies at each step of a send (``COMMUNICATION_FAULTS``, test-only
crash points: ``communication.faults``). Every committed notification still ends terminal; a
rolled-back one never reaches the provider; a delivery is sent twice only when the worker died
between the provider's answer and its record, and then it is flagged ``possibly_duplicate``."""

from __future__ import annotations

import http.client
import json
import uuid

import pytest

from communication.compliance.keyed import lookup_hash
from conftest import LiveServer, wait_for
from notifications.models import Delivery, IdempotencyKey, NotificationRequest
from notifications.services import deliveries_sweep
from tests.faults.harness import FakeSendGrid, deliveries_of, settle, tally

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.slow]


@pytest.fixture
def provider():
    fake = FakeSendGrid()
    yield fake
    fake.close()


@pytest.fixture
def prefix(settings):
    """Queues of this test's own: only its worker takes what it enqueues."""
    name = f"crash{uuid.uuid4().hex[:6]}-"
    settings.CELERY_QUEUE_PREFIX = name
    settings.DELIVERY_REPUBLISH_SECONDS = 1  # the in-process sweep's horizon for lost publishes
    return name


def post(server: LiveServer, token: str, body: dict, key: str = "") -> tuple[int, dict] | None:
    """The send's status and body, or None when the server died before answering."""
    port = int(server.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    try:
        conn.request("POST", "/api/v1/notifications", json.dumps(body), headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def email(to: str) -> dict:
    return {
        "recipients": [{"email": to}],
        "channels": ["email"],
        "category": "alerts",
        "content": {"subject": "Disk almost full", "text": "90 % used."},
    }


def died(server: LiveServer) -> bool:
    return server.proc.poll() is not None


def request_ids_to(address: str) -> list[str]:
    ids = Delivery.objects.filter(address_hash=lookup_hash(address))
    return [str(i) for i in ids.values_list("notification__request_id", flat=True).distinct()]


def test_a_crash_at_each_step_of_a_send(
    start_live_asgi, start_worker, provider, prefix, make_service_token, fault_report
):
    token = make_service_token("billing", ["notifications:send"])
    start_worker({**provider.env(), "DELIVERY_LEASE_SECONDS": "3"}, prefix)
    base = {"CELERY_QUEUE_PREFIX": prefix, "DELIVERY_ENQUEUE_LINGER_MS": "0"}
    lines = []

    # 1. Before the commit: the request's transaction rolls back with the process. Its key's
    # claim (committed on its own) is taken over by the client's retry on a new process.
    server = start_live_asgi({**base, "COMMUNICATION_FAULTS": "send.before_commit"})
    assert post(server, token, email("before@example.com"), key="k-before") is None
    wait_for(lambda: died(server), 10, what="the web process to die")
    assert not NotificationRequest.objects.filter(idempotency_key="k-before").exists()
    assert IdempotencyKey.objects.get(key="k-before").in_flight
    server = start_live_asgi({**base, "IDEMPOTENCY_IN_FLIGHT_SECONDS": "0"})
    retried = post(server, token, email("before@example.com"), key="k-before")
    assert retried is not None and retried[0] == 202, retried
    before_id = retried[1]["request_id"]
    lines.append("before commit: nothing written, no provider call; the retry took the key over")

    # 2. Between the commit and the publish: committed, never handed to the broker. The sweep
    # publishes it once it has waited DELIVERY_REPUBLISH_SECONDS.
    server = start_live_asgi({**base, "COMMUNICATION_FAULTS": "send.after_commit"})
    assert post(server, token, email("between@example.com")) is None
    wait_for(lambda: died(server), 10, what="the web process to die")
    (between_id,) = request_ids_to("between@example.com")
    assert [s for _, s, _ in deliveries_of([between_id])] == ["queued"]

    # 3. After the publish: the worker has it; the client's retry with its key is a replay.
    server = start_live_asgi({**base, "COMMUNICATION_FAULTS": "send.after_enqueue"})
    assert post(server, token, email("after@example.com"), key="k-after") is None
    wait_for(lambda: died(server), 10, what="the web process to die")
    server = start_live_asgi(base)
    replay = post(server, token, email("after@example.com"), key="k-after")
    assert replay is not None and replay[0] == 202, replay
    after_id = replay[1]["request_id"]

    took = settle([before_id, between_id, after_id], 60, deliveries_sweep)
    web = tally([before_id, between_id, after_id], provider)
    assert web.lost == 0 and web.duplicated == 0 and web.flagged == 0, web
    assert sum(provider.received.values()) == 3  # one call each, the rolled-back one never
    lines.append(f"web crashes (3 points): {web.line()}, settled in {took} s")

    # 4. Between the provider's answer and its record: the worker dies with the message sent.
    # Its lease expires, the sweep flags it, and it is sent again: the only duplicate.
    killer = start_worker(
        {
            **provider.env(),
            "DELIVERY_LEASE_SECONDS": "3",
            "COMMUNICATION_FAULTS": "delivery.after_provider_call=record@",
        },
        f"{prefix}w-",
    )
    server = start_live_asgi({**base, "CELERY_QUEUE_PREFIX": f"{prefix}w-"})
    sent = post(server, token, email("record@example.com"))
    assert sent is not None and sent[0] == 202
    record_id = sent[1]["request_id"]
    wait_for(lambda: killer.proc.poll() is not None, 30, what="the worker to die")
    # The sweep (here, in-process) hands it back to the queues of the first worker.
    took = settle([record_id], 60, deliveries_sweep)
    worker = tally([record_id], provider)
    assert worker.lost == 0 and worker.duplicated == 1 and worker.flagged == 1, worker
    assert worker.unflagged_duplicates == []
    status = post_get(server, token, record_id)
    assert status["notifications"][0]["deliveries"][0]["possibly_duplicate"] is True
    lines.append(f"worker crash after the provider's answer: {worker.line()}, settled in {took} s")

    fault_report(
        "injected: os._exit at send.before_commit, send.after_commit, send.after_enqueue (web),"
        " delivery.after_provider_call (worker)",
        *lines,
    )


def post_get(server: LiveServer, token: str, request_id: str) -> dict:
    port = int(server.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "GET",
        f"/api/v1/notifications/requests/{request_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 200, body
    return body
