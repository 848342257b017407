"""End-to-end encrypted conversations: two users' reference clients (``e2e_client``) exchange
messages through the API and a live gateway; the server forwards envelopes it cannot read."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import uuid

import pytest
from django.db import connection
from websockets.sync.client import connect

from communication.auth import tokens
from communication.models import AuditEntry, User
from messaging import services
from messaging.models import Conversation, DeviceKey, Message, MessageType, Participant
from messaging.tests.conftest import create_conversation, drain, make_user, of_type, recv_until
from messaging.tests.e2e_client import ALG, Device, b64
from notifications.models import Notification

live = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@contextlib.contextmanager
def socket(server_ws_url, user):
    with connect(f"{server_ws_url}/ws/v1/?token={tokens.issue_user_token(user)}") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        yield ws


def created_for(client_id):
    return lambda e: e.get("type") == "message.created" and e["data"]["client_id"] == client_id


def publish(client, device: Device):
    response = client.put(f"/api/v1/keys/devices/{device.device_id}", device.published(), "json")
    assert response.status_code in (200, 201), response.content
    return response


def learn(client, device: Device, user_id: str) -> None:
    response = client.get(f"/api/v1/keys/users/{user_id}")
    assert response.status_code == 200, response.content
    device.learn(response.json())


def columns_holding(needle: str) -> list[str]:
    """Every text, JSON and bytea column of every table that contains ``needle``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND data_type IN "
            "('text', 'character varying', 'json', 'jsonb', 'bytea') ORDER BY table_name"
        )
        by_table: dict[str, list[tuple[str, str]]] = {}
        for table, column, kind in cursor.fetchall():
            by_table.setdefault(table, []).append((column, kind))
        found = []
        for table, cols in by_table.items():
            for column, kind in cols:
                test = (
                    f"position(convert_to(%s, 'UTF8') in \"{column}\") > 0"
                    if kind == "bytea"
                    else f'strpos("{column}"::text, %s) > 0'
                )
                cursor.execute(f'SELECT EXISTS (SELECT 1 FROM "{table}" WHERE {test})', [needle])  # noqa: S608 - names from the catalogue
                if cursor.fetchone()[0]:
                    found.append(f"{table}.{column}")
        return found


@live
def test_two_users_exchange_encrypted_messages_the_server_cannot_read(live_asgi, as_user, caplog):
    caplog.set_level(logging.INFO)
    tag = uuid.uuid4().hex[:6]
    alice, bob, carol = (make_user(f"{n}-{tag}") for n in ("alice", "bob", "carol"))
    a, b = as_user(alice), as_user(bob)
    # Both call their device "phone": the key entries tell them apart by user.
    alice_phone, bob_phone = Device(alice.external_id, "phone"), Device(bob.external_id, "phone")
    publish(a, alice_phone), publish(b, bob_phone)
    # Strangers see nobody's keys, whether the user exists or not.
    for who in (alice.external_id, "nobody"):
        refused = b.get(f"/api/v1/keys/users/{who}")
        assert refused.status_code == 404 and refused.json()["code"] == "keys_not_found"

    conv = create_conversation(a, participants=[bob.external_id], encrypted=True)
    assert conv["encrypted"] is True and conv["type"] == "direct"
    # The same pair: the encrypted one again, and a plain one beside it.
    assert (
        create_conversation(b, participants=[alice.external_id], encrypted=True)["id"] == conv["id"]
    )
    plain = create_conversation(a, participants=[bob.external_id])
    assert plain["id"] != conv["id"] and plain["encrypted"] is False
    learn(a, alice_phone, bob.external_id), learn(b, bob_phone, alice.external_id)
    cid = conv["id"]
    said = {n: f"secret {n} {uuid.uuid4().hex}" for n in ("rest", "edited", "ws-bob", "ws-alice")}

    # alice → bob over the API, bob offline: notified, without a word of it.
    sent = a.post(
        f"/api/v1/conversations/{cid}/messages",
        {"encrypted": alice_phone.encrypt(cid, said["rest"]), "client_id": "m1"},
        format="json",
    )
    assert sent.status_code == 201, sent.content
    body = sent.json()
    assert body["type"] == "encrypted" and body["content"] == "" and body["html"] == ""
    assert alice_phone.decrypt(cid, alice.external_id, body["encrypted"]) == said["rest"]
    listed = b.get(f"/api/v1/conversations/{cid}/messages").json()["results"]
    assert bob_phone.decrypt(cid, alice.external_id, listed[-1]["encrypted"]) == said["rest"]
    bobs = Participant.objects.get(conversation_id=cid, user=bob)
    assert services.participant_notify_offline(bobs.pk) == "sent"
    (note,) = [n for n in Notification.objects.filter(user=bob) if n.data["conversation_id"] == cid]
    assert note.body == "New encrypted message"
    item = next(c for c in b.get("/api/v1/conversations").json()["results"] if c["id"] == cid)
    assert item["last_message"]["preview"] == "Encrypted message"

    # An edit takes a new envelope, never text.
    mid = body["id"]
    text_edit = a.put(f"/api/v1/messages/{mid}", {"content": "plain words"}, format="json")
    assert text_edit.json()["code"] == "encryption_required"
    edited = a.put(
        f"/api/v1/messages/{mid}",
        {"encrypted": alice_phone.encrypt(cid, said["edited"])},
        format="json",
    )
    assert edited.status_code == 200, edited.content
    fetched = b.get(f"/api/v1/messages/{mid}").json()
    assert bob_phone.decrypt(cid, alice.external_id, fetched["encrypted"]) == said["edited"]

    with socket(live_asgi.ws_url, alice) as wa, socket(live_asgi.ws_url, bob) as wb:
        drain(wa), drain(wb)
        wb.send(
            json.dumps(
                {
                    "type": "message.send",
                    "conversation_id": cid,
                    "encrypted": bob_phone.encrypt(cid, said["ws-bob"]),
                    "client_id": "w1",
                }
            )
        )
        got = recv_until(wa, created_for("w1"))["data"]
        assert got["content"] == "" and got["sender"] == bob.external_id
        assert alice_phone.decrypt(cid, bob.external_id, got["encrypted"]) == said["ws-bob"]
        assert recv_until(wb, of_type("message.ack"))["replay"] is False
        wa.send(
            json.dumps(
                {
                    "type": "message.send",
                    "conversation_id": cid,
                    "encrypted": alice_phone.encrypt(cid, said["ws-alice"]),
                    "client_id": "w2",
                }
            )
        )
        back = recv_until(wb, created_for("w2"))["data"]
        assert bob_phone.decrypt(cid, alice.external_id, back["encrypted"]) == said["ws-alice"]
        # Plaintext over the socket is refused; the socket stays open.
        wa.send(
            json.dumps(
                {"type": "message.send", "conversation_id": cid, "content": said["ws-alice"]}
            )
        )
        assert recv_until(wa, of_type("error"))["code"] == "encryption_required"
        wa.send(json.dumps({"type": "message.send", "conversation_id": cid, "encrypted": {}}))
        assert recv_until(wa, of_type("error"))["code"] == "invalid_envelope"

    assert set(Message.objects.filter(conversation_id=cid).values_list("type", "html")) == {
        (MessageType.ENCRYPTED, "")
    }
    # Nothing the users said is anywhere in the database or the logs: not in the messages, their
    # edit trail, the realtime event log, the notifications or the audit trail.
    assert "communication_user.username" in columns_holding(tag)  # the search finds what is there
    for text in said.values():
        assert columns_holding(text) == [], text
        assert text not in caplog.text and text not in live_asgi.log.read_text()
    # Key publishing is audited; carol, in no conversation with them, still sees no keys.
    assert AuditEntry.objects.filter(action="device_key.publish", actor__contains=tag).count() == 2
    assert as_user(carol).get(f"/api/v1/keys/users/{bob.external_id}").status_code == 404


def envelope(**changes):
    body = {
        "alg": ALG,
        "ciphertext": b64(b"\x01" * 40),
        "nonce": b64(b"\x02" * 12),
        "sender_device": "phone",
        "keys": [{"device_id": "phone", "wrapped_key": b64(b"\x03" * 92)}],
    }
    return {**body, **changes}


@pytest.mark.django_db
def test_refusals_carry_codes(alice, bob, carol, as_user, settings):
    a = as_user(alice)
    secret = create_conversation(a, "group", ["bob"], encrypted=True)
    plain = create_conversation(a, "group", ["bob"])

    def send(conv, **body):
        response = a.post(f"/api/v1/conversations/{conv['id']}/messages", body, format="json")
        return response.status_code, response.json().get("code")

    assert send(secret, content="hello") == (400, "encryption_required")
    assert send(secret, attachments=[str(uuid.uuid4())]) == (400, "encryption_required")
    assert send(secret, encrypted=envelope(), content="hello") == (400, "encryption_required")
    assert send(plain, encrypted=envelope()) == (400, "not_encrypted")
    assert send(secret, type="encrypted", content="x") == (400, "invalid_envelope")
    settings.MESSAGING_MAX_CONTENT_LENGTH = 10
    bad = [
        envelope(ciphertext="not base64!"),
        envelope(ciphertext=b64(b"x" * 57)),  # past 4 bytes a character and the tag
        envelope(nonce=b64(b"n" * 16)),
        envelope(alg="aes-128-cbc"),
        envelope(keys=[envelope()["keys"][0]] * 2),
        envelope(keys=[{"device_id": f"d{i}", "wrapped_key": "AA=="} for i in range(101)]),
        envelope(keys=[{"device_id": "bad id!", "wrapped_key": "AA=="}]),
        envelope(extra="x"),
    ]
    for body in bad:
        assert send(secret, encrypted=body) == (400, "invalid_envelope"), body
    assert send(secret, encrypted=envelope(), client_id="ok")[0] == 201
    # Not a member: the same 404 as for a conversation that does not exist, whatever was sent.
    c = as_user(carol)
    for body in ({"encrypted": envelope()}, {"content": "hi"}):
        response = c.post(f"/api/v1/conversations/{plain['id']}/messages", body, format="json")
        assert response.status_code == 404
    # The flag is fixed at creation.
    response = a.patch(f"/api/v1/conversations/{secret['id']}", {"encrypted": False}, "json")
    assert response.status_code == 400 and "encrypted" in response.json()["fields"]
    assert Conversation.objects.get(pk=secret["id"]).encrypted is True


@pytest.mark.django_db
def test_device_keys_are_checked_capped_and_deleted(alice, as_user, settings):
    a = as_user(alice)
    good = Device(alice.external_id, "phone").published()
    for body in (
        {**good, "identity_key": b64(b"k" * 31)},
        {**good, "signed_prekey": {"key": good["identity_key"]}},
        {**good, "signed_prekey": {**good["signed_prekey"], "signature": "***"}},
    ):
        response = a.put("/api/v1/keys/devices/phone", body, format="json")
        assert response.status_code == 400 and response.json()["code"] == "invalid_keys"
    assert a.put("/api/v1/keys/devices/bad%20id", good, format="json").status_code == 400
    settings.MESSAGING_MAX_DEVICE_KEYS = 2
    assert a.put("/api/v1/keys/devices/one", good, format="json").status_code == 201
    assert a.put("/api/v1/keys/devices/one", good, format="json").status_code == 200
    assert a.put("/api/v1/keys/devices/two", good, format="json").status_code == 201
    third = a.put("/api/v1/keys/devices/three", good, format="json")
    assert third.status_code == 409 and third.json()["code"] == "too_many_devices"
    mine = a.get(f"/api/v1/keys/users/{alice.external_id}").json()
    assert [d["device_id"] for d in mine["devices"]] == ["one", "two"]
    assert mine["devices"][0]["identity_key"] == good["identity_key"]
    assert base64.b64decode(mine["devices"][0]["signed_prekey"]["signature"])
    assert a.delete("/api/v1/keys/devices/one").status_code == 204
    assert a.delete("/api/v1/keys/devices/one").json()["code"] == "device_not_found"
    assert list(DeviceKey.objects.filter(user=alice).values_list("device_id", flat=True)) == ["two"]
    actions = AuditEntry.objects.filter(object_type="messaging.devicekey")
    assert sorted(actions.values_list("action", flat=True)) == [
        "device_key.delete",
        *["device_key.publish"] * 3,
    ]


@pytest.mark.django_db
def test_staff_pages_show_no_envelope(alice, bob, client):
    conversation, _ = services.conversation_create(
        user=alice, type="direct", participants=["bob"], encrypted=True
    )
    first, second = b64(b"first ciphertext" * 3), b64(b"second ciphertext" * 3)
    message, _ = services.message_send(
        user=alice, conversation_id=conversation.id, encrypted=envelope(ciphertext=first)
    )
    services.message_edit(user=alice, message_id=message.id, encrypted=envelope(ciphertext=second))
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    pages = [
        f"/admin/messaging/conversation/{conversation.id}/change/",
        f"/admin/messaging/message/{message.id}/change/",
        f"/admin/messaging/messageedit/{message.edits.get().id}/change/",
    ]
    for url in pages:
        html = client.get(url).content.decode()
        assert "ncrypted" in html, url
        assert first not in html and second not in html, url
