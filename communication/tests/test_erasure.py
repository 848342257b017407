"""The right to erasure, end to end: a person with planted canary values uses every app through a
live server and worker, is erased through the API, and no canary is left in any table, Redis key
or value, stored file, or the processes' logs."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import urllib.request
import uuid

import phonenumbers
import pytest
import redis
from django.conf import settings
from django.db import connection
from PIL import Image

from campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignRun,
    CampaignStep,
    StaticList,
    StaticListMember,
)
from communication import services as core_services
from communication.auth import tokens
from communication.models import AuditEntry, ErasureRequest, User
from conftest import wait_for
from messaging.models import Attachment, Message
from notifications.models import Delivery, Suppression, suppression_hash

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

ERASURE = "/api/v1/compliance/erasure"
TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb", "ARRAY", "bytea")


def call(base, method, path, token, body=None, *, files=None):
    """One request to the live server: (status, parsed JSON body or None)."""
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if files is not None:
        boundary = uuid.uuid4().hex
        name, content, ctype = files
        data = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n"
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (400, 300), (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def pdf(text: str) -> bytes:
    return f"%PDF-1.4\n1 0 obj << /Title ({text}) >> endobj\ntrailer << >>\n%%EOF\n".encode()


def _valid_phone() -> str:
    # A random French mobile number that phonenumbers accepts (not every +336… range is valid).
    while True:
        candidate = f"+336{random.randint(10_000_000, 99_999_999)}"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            return candidate


def canaries(push_service: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {
        "email": f"canary.{tag}@example.com",
        "phone": _valid_phone(),
        "name": f"Canaryname{tag}",
        "text": f"canarytext{tag}",
        "token": f"canarytoken{tag}",
        # A local server plays the browser's push service (development accepts http).
        "endpoint": f"{push_service}/push/canaryendpoint{tag}",
    }


def db_traces(values: dict[str, str]) -> list[str]:
    """Every (table, column) of the database holding one of ``values``: text, varchar, JSON,
    arrays as text, and bytea compared with the value's UTF-8 bytes. One query per column."""
    found = []
    kinds = list(values)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
            "AND c.data_type = ANY(%s) ORDER BY 1, 2",
            [list(TEXT_TYPES)],
        )
        for table, column, data_type in cursor.fetchall():
            if data_type == "bytea":
                test = f"position(convert_to(%s, 'UTF8') in \"{column}\") > 0"
            else:
                test = f'position(lower(%s) in lower("{column}"::text)) > 0'
            counts = ", ".join(f"count(*) FILTER (WHERE {test})" for _ in kinds)
            cursor.execute(
                f'SELECT {counts} FROM "{table}"',  # noqa: S608
                [values[k] for k in kinds],
            )
            for kind, n in zip(kinds, cursor.fetchone(), strict=True):
                if n:
                    found.append(f"{table}.{column}: {n} row(s) hold the {kind} canary")
    return found


def redis_traces(values: dict[str, str]) -> list[str]:
    """Every Redis key of the service's database whose name or value holds one of ``values``."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            parts = [client.get(key) or b""]
        elif kind == "hash":
            parts = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "list":
            parts = client.lrange(key, 0, -1)
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "zset":
            parts = client.zrange(key, 0, -1)
        elif kind == "stream":
            parts = [json.dumps(str(e)).encode() for e in client.xrange(key)]
        else:
            parts = []
        blob = key + b"\n" + b"\n".join(parts)
        for name, value in values.items():
            if value.lower().encode() in blob.lower():
                found.append(f"redis key {key!r} ({kind}) holds the {name} canary")
    client.close()
    return found


def file_traces(values: dict[str, str]) -> list[str]:
    found = []
    for folder, _, names in os.walk(settings.MEDIA_ROOT):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                blob = fh.read().lower()
            for kind, value in values.items():
                if value.lower().encode() in blob or value.lower() in name.lower():
                    found.append(f"file {path} holds the {kind} canary")
    return found


def log_traces(values: dict[str, str], logs: dict[str, str]) -> list[str]:
    return [
        f"{process} log holds the {kind} canary"
        for process, text in logs.items()
        for kind, value in values.items()
        if value.lower() in text.lower()
    ]


def test_an_erased_person_leaves_no_trace(live_asgi, celery_worker, httpserver):
    base = live_asgi.url
    httpserver.expect_request(re.compile(r"^/push/"), method="POST").respond_with_data(
        "", status=201
    )
    c = canaries(httpserver.url_for("").rstrip("/"))
    sub = f"erase-{uuid.uuid4().hex[:8]}"
    logs_from = {
        "asgi": len(live_asgi.log.read_text()),
        "worker": len(celery_worker.log.read_text()),
    }
    alice = core_services.user_update_local(
        external_id=sub, email=c["email"], phone=c["phone"], name=c["name"]
    )
    bob = core_services.user_update_local(external_id=f"bob-{uuid.uuid4().hex[:8]}", name="Bob")
    a, b = tokens.issue_user_token(alice), tokens.issue_user_token(bob)
    service = tokens.issue_service_token(
        "erasure-test", ["notifications:send", "compliance:manage"]
    )

    # Devices: an FCM token and a browser's push subscription.
    status, _ = call(
        base, "POST", "/api/v1/devices", a, {"platform": "android", "token": c["token"]}
    )
    assert status == 201
    status, _ = call(
        base,
        "POST",
        "/api/v1/devices",
        a,
        {
            "platform": "web",
            "subscription": {
                "endpoint": c["endpoint"],
                "keys": {
                    "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                    "auth": "tBHItJI5svbpez7KI4CCXg",
                },
            },
        },
    )
    assert status == 201

    # Notifications by email, SMS, push and in-app, delivered by the worker to the outbox.
    status, sent = call(
        base,
        "POST",
        "/api/v1/notifications",
        service,
        {
            "recipients": [{"user_id": sub}],
            "category": "alerts",
            "channels": ["email", "sms", "push", "in_app"],
            "content": {
                "subject": "Hello {{ who }}",
                "title": "Hello {{ who }}",
                "body": "Dear {{ who }}, about {{ what }}.",
            },
            "data": {"who": c["name"], "what": c["text"]},
        },
    )
    assert status == 202, sent
    ids = [d["id"] for d in sent["notifications"][0]["deliveries"]]

    def delivered():
        states = set(Delivery.objects.filter(id__in=ids).values_list("status", flat=True))
        return states <= {"delivered", "sent", "failed"} and len(states) > 0

    wait_for(delivered, 30, what="deliveries")

    status, inbox = call(base, "GET", "/api/v1/notifications/history", a)
    assert status == 200 and len(inbox["results"]) == 1, inbox

    # A conversation with bob: a message, edited; an image and a PDF sent as attachments.
    status, conv = call(
        base,
        "POST",
        "/api/v1/conversations",
        a,
        {"type": "direct", "participants": [bob.external_id]},
    )
    assert status in (200, 201), conv
    path = f"/api/v1/conversations/{conv['id']}/messages"
    status, first = call(base, "POST", path, a, {"content": f"hello {c['text']} one"})
    assert status == 201, first
    status, _ = call(base, "POST", path, b, {"content": "hi there"})
    assert status == 201
    status, edited = call(
        base, "PUT", f"/api/v1/messages/{first['id']}", a, {"content": f"{c['text']} edited"}
    )
    assert status == 200, edited
    status, image = call(
        base, "POST", "/api/v1/attachments", a, files=(f"{c['text']}.png", png(), "image/png")
    )
    assert status == 201, image
    status, doc = call(
        base,
        "POST",
        "/api/v1/attachments",
        a,
        files=("notes.pdf", pdf(c["text"]), "application/pdf"),
    )
    assert status == 201, doc
    status, _ = call(
        base, "POST", path, a, {"content": "", "attachments": [image["id"], doc["id"]]}
    )
    assert status == 201
    stored = [
        name
        for row in Attachment.objects.filter(uploader=alice).values_list("file", "thumbnail")
        for name in row
        if name
    ]
    assert len(stored) >= 3  # two files and the image's thumbnail
    media = settings.MEDIA_ROOT
    assert all(os.path.exists(os.path.join(media, name)) for name in stored)

    # A campaign: a static list member and a recipient in the ledger.
    static = StaticList.objects.create(name="canary list")
    StaticListMember.objects.create(
        static_list=static, key=sub, user=alice, email=c["email"], data={"nick": c["name"]}
    )
    campaign = Campaign.objects.create(
        name="canary campaign", category_id="alerts", channels=["email"], static_list=static
    )
    step = CampaignStep.objects.create(campaign=campaign, position=0, content={"body": "x"})
    run = CampaignRun.objects.create(campaign=campaign, slot="2026-01-01T00:00:00Z")
    CampaignRecipient.objects.create(
        run=run, step=step, key=sub, user=alice, email=c["email"], data={"nick": c["name"]}
    )

    # What the identity service's profile cache would hold for them (the server's cache prefix).
    prefix = os.environ.get("CACHE_KEY_PREFIX", "comm")
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set(f"{prefix}:1:identity:user:{sub}", pickle.dumps({"email": c["email"]}), ex=600)
    client.close()

    planted = {k: v for k, v in c.items()}
    assert db_traces(planted), "the scenario planted no canary in the database"
    assert file_traces({"text": c["text"]}), "the scenario stored no canary in a file"
    before_ids = list(
        Message.objects.filter(conversation_id=conv["id"]).values_list("id", flat=True)
    )

    # The erasure, through the API.
    status, body = call(base, "POST", ERASURE, service, {"user_id": sub})
    assert status == 200, body
    assert body["subject"] == sub and body["already_erased"] is False
    erased = body["erased"]
    for kind in (
        "communication.profile",
        "communication.realtime_events",
        "communication.identity_cache",
        "notifications.devices",
        "notifications.notifications",
        "notifications.deliveries",
        "notifications.outbox",
        "notifications.requests",
        "notifications.erased_addresses",
        "messaging.messages",
        "messaging.edits",
        "messaging.attachments",
        "campaigns.list_members",
        "campaigns.recipients",
        # The person's events, found through their deliveries first (a row is counted once).
        "notifications.delivery_events",
    ):
        assert erased.get(kind, 0) > 0, f"{kind} erased nothing: {erased}"

    problems = db_traces(planted) + redis_traces(planted) + file_traces(planted)
    assert not problems, "canaries left after erasure:\n" + "\n".join(problems)
    assert not any(os.path.exists(os.path.join(media, name)) for name in stored)
    (entry,) = AuditEntry.objects.filter(action="erasure.run")
    assert entry.object_type == "communication.erasurerequest"
    assert sub not in json.dumps(entry.changes) and entry.changes["erased"]
    assert ErasureRequest.objects.get(pk=entry.object_id).subject_hash not in ("", sub)

    # Bob still sees the conversation, with the tombstones in their places.
    status, listed = call(base, "GET", path, b)
    assert status == 200
    shown = {m["id"]: m for m in listed["results"]}
    assert sorted(shown) == sorted(before_ids)
    mine = [m for m in listed["results"] if m["sender"] != bob.external_id]
    assert mine and all(m["deleted_at"] and not m["content"] for m in mine)
    assert any(m["content"] == "hi there" for m in listed["results"])

    # Again: nothing left to erase.
    status, again = call(base, "POST", ERASURE, service, {"user_id": sub})
    assert status == 200
    assert again["already_erased"] is True and not any(again["erased"].values()), again

    # Their address, sent to again, is suppressed.
    assert Suppression.objects.filter(
        channel="email", address__isnull=True, address_hash=suppression_hash(c["email"])
    ).exists()
    status, resent = call(
        base,
        "POST",
        "/api/v1/notifications",
        service,
        {
            "recipients": [{"email": c["email"]}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Back?", "body": "Hello again."},
        },
    )
    assert status == 202, resent
    assert resent["notifications"][0]["deliveries"][0]["status"] == "suppressed", resent

    # They come back with a new token: a new, empty profile.
    back = User(external_id=sub, email="new@example.com")
    token = tokens.issue_user_token(back)
    status, me = call(base, "GET", "/api/v1/me", token)
    assert status == 200 and me["user_id"] == sub, me
    assert User.objects.get(external_id=sub).pk != alice.pk
    status, inbox = call(base, "GET", "/api/v1/notifications/history", token)
    assert status == 200 and inbox["results"] == [], inbox

    logs = {
        "asgi": live_asgi.log.read_text()[logs_from["asgi"] :],
        "worker": celery_worker.log.read_text()[logs_from["worker"] :],
    }
    leaked = log_traces(planted, logs)
    assert not leaked, "canaries in the processes' logs:\n" + "\n".join(leaked)
