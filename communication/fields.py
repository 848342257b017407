"""Model fields encrypted at rest: AES-256-GCM over the value's bytes, in a ``bytea`` column,
and the keyed-hash column that stands beside one that must be found by equality.

A stored value is ``version (1 byte) | key id length (1 byte) | key id | nonce (12 bytes) |
ciphertext+tag``; the header (version and key id) is authenticated with it (associated data), so
a changed byte anywhere makes decryption fail rather than return something else. Keys come from
``settings.FIELD_ENCRYPTION_KEYS``, newest first, each ``id:base64key`` (32 bytes; a bare key
gets an id derived from it): the first encrypts, every one decrypts. ``manage.py rotate_keys``
re-encrypts what an older key wrote, after which that key can be removed.

``get_db_prep_value`` encrypts and ``from_db_value`` decrypts, so the ORM, ``bulk_create``,
``values()`` and ``communication.rows`` all store and read the same thing; raw SQL passes its
values through ``get_db_prep_value`` too. A fresh nonce per write means equal values have
different ciphertexts: the columns cannot be filtered on, except ``isnull``. A column that must
be (a device token, an address) gets a ``LookupHashField`` beside it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from communication.compliance.keyed import lookup_hash

VERSION = b"\x02"
KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12
TAG_SIZE = 16  # AES-GCM's authentication tag
KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class DecryptionError(ValueError):
    """A stored value that no configured key opens: tampered, truncated, or its key removed."""


def derived_key_id(key: bytes) -> str:
    """The id of a key configured without one."""
    return "k" + hashlib.sha256(b"communication.fields key id\x00" + key).hexdigest()[:8]


def header(key_id: str) -> bytes:
    """What every value encrypted under ``key_id`` starts with (``rotate_keys`` compares it)."""
    encoded = key_id.encode("ascii")
    return VERSION + bytes([len(encoded)]) + encoded


@dataclass(frozen=True)
class Keyring:
    current: str  # the id of the key that encrypts
    ciphers: dict[str, AESGCM]

    @property
    def current_header(self) -> bytes:
        return header(self.current)


def _parse(text: str) -> tuple[str | None, bytes]:
    key_id, sep, encoded = text.rpartition(":")
    if sep and not KEY_ID.fullmatch(key_id):
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS: a key id is 1 to 32 of A-Z a-z 0-9 _ . -"
        )
    try:
        padded = encoded + "=" * (-len(encoded) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS: a key is not base64") from exc
    if len(raw) != KEY_SIZE:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS: each key is 32 bytes (base64)")
    return (key_id or None), raw


@lru_cache(maxsize=8)
def _keyring(keys: tuple[str, ...]) -> Keyring:
    ciphers: dict[str, AESGCM] = {}
    for text in keys:
        key_id, raw = _parse(text)
        key_id = key_id or derived_key_id(raw)
        if key_id in ciphers:
            raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS: the key id {key_id!r} is repeated")
        ciphers[key_id] = AESGCM(raw)
    if not ciphers:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty: encrypted fields need a key")
    return Keyring(current=next(iter(ciphers)), ciphers=ciphers)


def keyring() -> Keyring:
    configured = settings.FIELD_ENCRYPTION_KEYS
    if isinstance(configured, str):
        configured = configured.split(",")
    # Keyed by the setting's value, so a changed setting (a rotation, a test) takes effect.
    return _keyring(tuple(k.strip() for k in configured if k.strip()))


def encrypt(plaintext: bytes) -> bytes:
    ring = keyring()
    head = ring.current_header
    nonce = os.urandom(NONCE_SIZE)
    return head + nonce + ring.ciphers[ring.current].encrypt(nonce, plaintext, head)


def stored_key_id(token: bytes) -> str:
    """The id of the key ``token`` was encrypted under; DecryptionError for an unknown format."""
    if token[:1] != VERSION or len(token) < 2:
        raise DecryptionError("not an encrypted value of a known version")
    size = token[1]
    try:
        return token[2 : 2 + size].decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecryptionError("not an encrypted value of a known version") from exc


def decrypt(token: bytes) -> bytes:
    """The plaintext of :func:`encrypt`'s ``token``; :class:`DecryptionError` otherwise."""
    key_id = stored_key_id(token)
    head_size = 2 + token[1]
    head, nonce = token[:head_size], token[head_size : head_size + NONCE_SIZE]
    if len(nonce) != NONCE_SIZE:
        raise DecryptionError("not an encrypted value of a known version")
    cipher = keyring().ciphers.get(key_id)
    if cipher is None:
        raise DecryptionError(f"encrypted with the key {key_id!r}, which is no longer configured")
    try:
        return cipher.decrypt(nonce, token[head_size + NONCE_SIZE :], head)
    except InvalidTag as exc:
        raise DecryptionError("the encrypted value was altered") from exc


def reencrypt(token: bytes) -> bytes:
    """``token`` under the current key (as it is when it already is)."""
    if token.startswith(keyring().current_header):
        return token
    return encrypt(decrypt(token))


class EncryptedField(models.Field):
    """Base of the encrypted fields: a subclass turns its Python value into bytes
    (``to_bytes``) and back (``from_bytes``)."""

    empty_strings_allowed = False

    def get_internal_type(self) -> str:
        return "BinaryField"  # a bytea column, in migrations and the schema editor

    def to_bytes(self, value) -> bytes:
        raise NotImplementedError

    def from_bytes(self, data: bytes):
        raise NotImplementedError

    def get_db_prep_value(self, value, connection, prepared=False):
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        return connection.Database.Binary(encrypt(self.to_bytes(value)))

    def encrypted(self, value: Any) -> bytes | None:
        """``value`` as the column stores it: the conversion of ``get_db_prep_value``, as bytes,
        for raw SQL that builds its parameters outside a Django connection (the gateway's
        asyncio pool) or in arrays."""
        value = self.get_prep_value(value)
        return None if value is None else encrypt(self.to_bytes(value))

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        return self.from_bytes(decrypt(bytes(value)))

    def get_lookup(self, lookup_name):
        # Every write has a fresh nonce: only NULL-ness can be compared in SQL.
        return super().get_lookup(lookup_name) if lookup_name == "isnull" else None


class PlaintextLength(models.Func):
    """The length in bytes of an encrypted column's plaintext, from the stored value's size
    (version, key id length, key id, nonce and tag around it): SQL tells an empty value (an
    anonymised one: ``""``, ``{}``) from another without a key."""

    template = (
        "(octet_length(%(expressions)s) - 2 - get_byte(%(expressions)s, 1) "
        f"- {NONCE_SIZE + TAG_SIZE})"
    )
    output_field = models.IntegerField()


class EncryptedTextField(EncryptedField):
    description = "Text, encrypted at rest"
    empty_strings_allowed = True

    def to_python(self, value):
        return value if value is None or isinstance(value, str) else str(value)

    def get_prep_value(self, value):
        return self.to_python(super().get_prep_value(value))

    def to_bytes(self, value) -> bytes:
        return value.encode()

    def from_bytes(self, data: bytes) -> str:
        return data.decode()


class EncryptedJSONField(EncryptedField):
    """A JSON document, encrypted at rest; ``encoder``/``decoder`` as for ``JSONField``.
    ``None`` is SQL ``NULL``."""

    description = "A JSON document, encrypted at rest"

    def __init__(self, *args, encoder=None, decoder=None, **kwargs):
        self.encoder, self.decoder = encoder, decoder
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.encoder is not None:
            kwargs["encoder"] = self.encoder
        if self.decoder is not None:
            kwargs["decoder"] = self.decoder
        return name, path, args, kwargs

    def to_bytes(self, value) -> bytes:
        return json.dumps(value, cls=self.encoder, separators=(",", ":")).encode()

    def from_bytes(self, data: bytes):
        return json.loads(data, cls=self.decoder)


class LookupHashField(models.CharField):
    """The keyed hash (``communication.compliance.keyed.lookup_hash``, under ``LOOKUP_HASH_KEY``)
    of another field of the row, set whenever the row is saved or inserted (``pre_save``: the
    ORM, ``bulk_create`` and ``communication.rows``). Equality lookups, unique constraints and
    the console's exact search use it in place of the encrypted column. A blank source gives a
    blank hash. ``casefold=False`` for case-sensitive values (tokens). ``QuerySet.update()``
    does not call ``pre_save``: an update of the source sets the hash too (``field.hash(v)``)."""

    description = "Keyed hash of another field"

    def __init__(self, *args: Any, of: str, casefold: bool = True, **kwargs: Any) -> None:
        self.of = of
        self.casefold = casefold
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("editable", False)
        kwargs.setdefault("blank", True)
        kwargs.setdefault("default", "")
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs["of"] = self.of
        if not self.casefold:
            kwargs["casefold"] = False
        for key, value in (("max_length", 64), ("editable", False), ("blank", True)):
            if kwargs.get(key) == value:
                del kwargs[key]
        if kwargs.get("default") == "":
            del kwargs["default"]
        return name, path, args, kwargs

    def hash(self, value: str | None) -> str:
        """What this column holds for a source ``value`` (what a lookup compares it with)."""
        return lookup_hash(value, casefold=self.casefold) if value else ""

    def pre_save(self, model_instance: models.Model, add: bool) -> str:
        value = self.hash(getattr(model_instance, self.of))
        setattr(model_instance, self.attname, value)
        return value
