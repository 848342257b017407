"""End-to-end encrypted conversations: the envelope a message carries there, and the devices'
public keys.

The server checks shapes and sizes only: it cannot read an envelope, and does not try to tell
whether the keys in it cover every device. An envelope is stored as a message of type
``encrypted`` whose content is the envelope's compact JSON (``envelope_text``); payloads show it
back as an object (``envelope_of``) and never as text.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction

from communication import adb
from communication.audit import actor_of, audit_record
from communication.exceptions import APIError, ConflictError, NotFoundError
from communication.models import User
from messaging import conf
from messaging.models import DeviceKey, Message, MessageType

ALG = "x25519-hkdf-sha256+aes-256-gcm"
NONCE_BYTES = 12
KEY_BYTES = 32  # an X25519 or Ed25519 public key
SIGNATURE_BYTES = 64
MAX_WRAPPED_KEY_BYTES = 256
MAX_KEYS = 100
GCM_TAG_BYTES = 16
DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
ENVELOPE_FIELDS = frozenset({"ciphertext", "nonce", "alg", "sender_device", "keys"})
# ``user_id`` (optional) tells apart two users' devices that chose the same device id.
KEY_ENTRY_FIELDS = frozenset({"device_id", "wrapped_key", "user_id"})
USER_ID_MAX = 255


def _invalid(field: str, problem: str, code: str = "invalid_envelope") -> APIError:
    return APIError(f"{field}: {problem}", code=code, fields={field: [problem]})


def _b64(
    value: object,
    field: str,
    *,
    size: int | None = None,
    limit: int | None = None,
    code: str = "invalid_envelope",
) -> str:
    """``value`` as canonical base64 (standard alphabet, padded); ``size`` exact or ``limit``
    bounds the decoded bytes."""
    if not isinstance(value, str) or not value:
        raise _invalid(field, "Must be a base64 string.", code)
    if limit is not None and len(value) > (limit + 2) // 3 * 4:
        raise _invalid(field, f"At most {limit} bytes.", code)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(field, "Not valid base64.", code) from None
    if size is not None and len(raw) != size:
        raise _invalid(field, f"Must be {size} bytes.", code)
    if limit is not None and (len(raw) > limit or not raw):
        raise _invalid(field, f"1 to {limit} bytes.", code)
    return base64.b64encode(raw).decode()


def _device_id(value: object, field: str, code: str = "invalid_envelope") -> str:
    if not isinstance(value, str) or not DEVICE_ID.fullmatch(value):
        raise _invalid(field, "1 to 64 characters of A-Z, a-z, 0-9, _ and -.", code)
    return value


def envelope_validated(envelope: object) -> dict[str, Any]:
    """The envelope as it is stored: checked and canonical; raises APIError
    (``invalid_envelope``) naming the field at fault."""
    if not isinstance(envelope, dict):
        raise _invalid("encrypted", "Must be an object.")
    unknown = set(envelope) - ENVELOPE_FIELDS
    if unknown:
        raise _invalid("encrypted", f"Unknown fields: {', '.join(sorted(map(str, unknown)))}.")
    if envelope.get("alg") != ALG:
        raise _invalid("encrypted.alg", f"Must be {ALG!r}.")
    # The longest text a plain message may have, at 4 UTF-8 bytes a character, and its tag.
    limit = conf.get("MESSAGING_MAX_CONTENT_LENGTH") * 4 + GCM_TAG_BYTES
    keys = envelope.get("keys")
    if not isinstance(keys, list) or not keys or len(keys) > MAX_KEYS:
        raise _invalid("encrypted.keys", f"A list of 1 to {MAX_KEYS} entries.")
    wrapped: list[dict[str, str]] = []
    for i, entry in enumerate(keys):
        field = f"encrypted.keys[{i}]"
        if not isinstance(entry, dict) or not (
            {"device_id", "wrapped_key"} <= set(entry) <= KEY_ENTRY_FIELDS
        ):
            raise _invalid(field, "An object with device_id, wrapped_key and maybe user_id.")
        item = {
            "device_id": _device_id(entry["device_id"], f"{field}.device_id"),
            "wrapped_key": _b64(
                entry["wrapped_key"], f"{field}.wrapped_key", limit=MAX_WRAPPED_KEY_BYTES
            ),
        }
        if "user_id" in entry:
            user_id = entry["user_id"]
            if not isinstance(user_id, str) or not 0 < len(user_id) <= USER_ID_MAX:
                raise _invalid(f"{field}.user_id", "A user id.")
            item["user_id"] = user_id
        wrapped.append(item)
    if len({(w.get("user_id"), w["device_id"]) for w in wrapped}) != len(wrapped):
        raise _invalid("encrypted.keys", "A device appears twice.")
    return {
        "alg": ALG,
        "ciphertext": _b64(envelope.get("ciphertext"), "encrypted.ciphertext", limit=limit),
        "nonce": _b64(envelope.get("nonce"), "encrypted.nonce", size=NONCE_BYTES),
        "sender_device": _device_id(envelope.get("sender_device"), "encrypted.sender_device"),
        "keys": wrapped,
    }


def envelope_text(envelope: dict[str, Any]) -> str:
    """A validated envelope as a message's content: compact JSON."""
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True)


def envelope_of(message: Message) -> dict[str, Any] | None:
    """The envelope an ``encrypted`` message carries (None for any other, or once deleted)."""
    if message.type != MessageType.ENCRYPTED or not message.content:
        return None
    try:
        envelope = json.loads(message.content)
    except ValueError:  # written before envelopes existed: opaque text, shown as nothing
        return None
    return envelope if isinstance(envelope, dict) else None


# ---------------------------------------------------------------------- which kind a send is


def plaintext_refused() -> APIError:
    return APIError(
        "This conversation is end-to-end encrypted: send an 'encrypted' envelope, without "
        "content, attachments or metadata.",
        code="encryption_required",
        fields={"encrypted": ["Required in an encrypted conversation."]},
    )


def envelope_refused() -> APIError:
    return APIError(
        "This conversation is not end-to-end encrypted: send 'content', not an envelope.",
        code="not_encrypted",
        fields={"encrypted": ["Only in an encrypted conversation."]},
    )


# Conversation id → encrypted. The flag never changes once a conversation exists, so a process
# may keep it: a send reads it once per conversation, not once per message.
_FLAGS: dict[str, bool] = {}
_FLAGS_MAX = 50_000
FLAG_SQL = "SELECT encrypted FROM messaging_conversation WHERE id = %(conversation)s"
MEMBER_SQL = (
    "SELECT EXISTS (SELECT 1 FROM messaging_participant WHERE conversation_id = %(conversation)s "
    "AND user_id = %(user)s AND left_at IS NULL)"
)


def _remember(key: str, rows: Sequence[tuple[Any, ...]]) -> bool | None:
    if not rows:
        return None  # no such conversation: the send's statement answers 404
    if len(_FLAGS) >= _FLAGS_MAX:
        _FLAGS.clear()
    _FLAGS[key] = bool(rows[0][0])
    return _FLAGS[key]


def _mismatch(encrypted: bool | None, envelope: bool, member: bool) -> APIError | None:
    if encrypted is None or encrypted == envelope:
        return None
    if not member:  # a non-member learns nothing of the conversation, not even its kind
        return NotFoundError("Conversation not found.")
    return envelope_refused() if envelope else plaintext_refused()


def check_kind(user: User, conversation_id: uuid.UUID | str, *, envelope: bool) -> None:
    """Raises unless the message's kind (an envelope or plaintext) is the conversation's."""
    key = str(conversation_id)
    params = {"conversation": uuid.UUID(key), "user": user.pk}
    encrypted = _FLAGS.get(key)
    if encrypted is None:
        with connection.cursor() as cursor:
            cursor.execute(FLAG_SQL, params)
            encrypted = _remember(key, cursor.fetchall())
    if encrypted is None or encrypted == envelope:
        return
    with connection.cursor() as cursor:
        cursor.execute(MEMBER_SQL, params)
        member = bool(cursor.fetchone()[0])
    error = _mismatch(encrypted, envelope, member)
    if error is not None:
        raise error


async def acheck_kind(user: User, conversation_id: uuid.UUID | str, *, envelope: bool) -> None:
    """``check_kind`` on the event loop (``communication.adb``)."""
    key = str(conversation_id)
    params = {"conversation": uuid.UUID(key), "user": user.pk}
    encrypted = _FLAGS.get(key)
    if encrypted is None:
        encrypted = _remember(key, await adb.fetchall(FLAG_SQL, params))
    if encrypted is None or encrypted == envelope:
        return
    member = bool((await adb.fetchall(MEMBER_SQL, params))[0][0])
    error = _mismatch(encrypted, envelope, member)
    if error is not None:
        raise error


# ------------------------------------------------------------------------------- device keys


def device_key_publish(
    *,
    user: User,
    device_id: str,
    identity_key: object,
    signed_prekey: object,
    signing_key: object = None,
) -> tuple[DeviceKey, bool]:
    """Publishes (or replaces) a device's public keys; returns the row and whether it is new.

    ``signed_prekey`` is ``{"key", "signature"}``; ``signing_key`` optionally the Ed25519 public
    key the signature verifies under (X25519 keys cannot sign). Sizes and base64 are checked,
    signatures are not: clients verify them. A user has at most ``MESSAGING_MAX_DEVICE_KEYS``
    devices (409 ``too_many_devices`` past it)."""
    bad = "invalid_keys"
    device_id = _device_id(device_id, "device_id", bad)
    identity = _b64(identity_key, "identity_key", size=KEY_BYTES, code=bad)
    if not isinstance(signed_prekey, dict) or set(signed_prekey) != {"key", "signature"}:
        raise _invalid("signed_prekey", "An object with key and signature.", bad)
    prekey = _b64(signed_prekey["key"], "signed_prekey.key", size=KEY_BYTES, code=bad)
    signature = _b64(
        signed_prekey["signature"], "signed_prekey.signature", size=SIGNATURE_BYTES, code=bad
    )
    signer = (
        "" if signing_key is None else _b64(signing_key, "signing_key", size=KEY_BYTES, code=bad)
    )
    values = {
        "identity_key": identity,
        "signed_prekey": prekey,
        "prekey_signature": signature,
        "signing_key": signer,
    }
    with transaction.atomic():
        # The user's row serialises their publishes, so that two new devices at once cannot
        # both pass the cap.
        User.objects.select_for_update().filter(pk=user.pk).values_list("pk").first()
        row = DeviceKey.objects.filter(user=user, device_id=device_id).first()
        created = row is None
        if row is None:
            cap = conf.get("MESSAGING_MAX_DEVICE_KEYS")
            if DeviceKey.objects.filter(user=user).count() >= cap:
                raise ConflictError(
                    f"A user has at most {cap} devices: delete one first.",
                    code="too_many_devices",
                )
            row = DeviceKey.objects.create(user=user, device_id=device_id, **values)
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.save(update_fields=[*values, "updated_at"])
        # Public keys only; the trail names the device, the keys are in the row.
        audit_record(
            "device_key.publish",
            "messaging.devicekey",
            row.pk,
            changes={"device_id": device_id, "created": created},
            actor=actor_of(user),
        )
    return row, created


def device_key_delete(*, user: User, device_id: str) -> None:
    """Removes a device's keys; 404 when the caller has no such device."""
    with transaction.atomic():
        row = DeviceKey.objects.filter(user=user, device_id=device_id).first()
        if row is None:
            raise NotFoundError("No such device.", code="device_not_found")
        audit_record(
            "device_key.delete",
            "messaging.devicekey",
            row.pk,
            changes={"device_id": device_id},
            actor=actor_of(user),
        )
        row.delete()


def device_keys_of(*, user: User, external_id: str) -> tuple[User, list[DeviceKey]]:
    """Another user's (or one's own) devices and public keys, for a caller who shares an active
    conversation with them; else 404 ``keys_not_found`` (whether the user exists or not)."""
    target = User.objects.filter(external_id=external_id).first()
    if target is None or (target.pk != user.pk and not _share_conversation(user.pk, target.pk)):
        raise NotFoundError("No keys to show for this user.", code="keys_not_found")
    return target, list(DeviceKey.objects.filter(user=target).order_by("device_id"))


def _share_conversation(a: uuid.UUID, b: uuid.UUID) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM messaging_participant mine "
            "JOIN messaging_participant other ON other.conversation_id = mine.conversation_id "
            "WHERE mine.user_id = %s AND other.user_id = %s "
            "AND mine.left_at IS NULL AND other.left_at IS NULL)",
            [a, b],
        )
        return bool(cursor.fetchone()[0])


def device_key_payload(row: DeviceKey) -> dict[str, Any]:
    return {
        "device_id": row.device_id,
        "identity_key": row.identity_key,
        "signed_prekey": {"key": row.signed_prekey, "signature": row.prekey_signature},
        "signing_key": row.signing_key or None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }
