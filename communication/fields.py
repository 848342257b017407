"""Model fields encrypted at rest: AES-256-GCM over the value's bytes, in a ``bytea`` column.

A stored value is ``version (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext+tag``;
the version and key id are authenticated with it (associated data), so a changed byte anywhere
makes decryption fail rather than return something else. Keys come from
``settings.FIELD_ENCRYPTION_KEYS`` (urlsafe base64 of 32 bytes each): the first encrypts, every
one decrypts, so a key is rotated by putting the new one first and re-saving the rows before the
old one is removed. The key id is derived from the key, not its position in the list.

``get_db_prep_value`` encrypts and ``from_db_value`` decrypts, so the ORM, ``values()`` and
``communication.rows`` all store and read the same thing. A fresh nonce per write means equal
values have different ciphertexts: the columns cannot be filtered on, except ``isnull``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

VERSION = b"\x01"
KEY_SIZE = 32  # AES-256
KEY_ID_SIZE = 4
NONCE_SIZE = 12
_HEADER_SIZE = len(VERSION) + KEY_ID_SIZE


class DecryptionError(ValueError):
    """A stored value that no configured key opens: tampered, truncated, or its key removed."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"communication.fields key id\x00" + key).digest()[:KEY_ID_SIZE]


@dataclass(frozen=True)
class _Keyring:
    current: bytes  # the key id that encrypts
    ciphers: dict[bytes, AESGCM]


@lru_cache(maxsize=8)
def _keyring(keys: tuple[str, ...]) -> _Keyring:
    ciphers: dict[bytes, AESGCM] = {}
    for text in keys:
        try:
            key = base64.urlsafe_b64decode(text.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS: a key is not base64") from exc
        if len(key) != KEY_SIZE:
            raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS: each key is 32 bytes")
        ciphers.setdefault(key_id(key), AESGCM(key))
    if not ciphers:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty: encrypted fields need a key")
    return _Keyring(current=next(iter(ciphers)), ciphers=ciphers)


def _keys() -> _Keyring:
    configured = settings.FIELD_ENCRYPTION_KEYS
    if isinstance(configured, str):
        configured = configured.split(",")
    # Keyed by the setting's value, so a changed setting (a rotation, a test) takes effect.
    return _keyring(tuple(k.strip() for k in configured if k.strip()))


def encrypt(plaintext: bytes) -> bytes:
    keyring = _keys()
    header = VERSION + keyring.current
    nonce = os.urandom(NONCE_SIZE)
    return header + nonce + keyring.ciphers[keyring.current].encrypt(nonce, plaintext, header)


def decrypt(token: bytes) -> bytes:
    """The plaintext of :func:`encrypt`'s ``token``; :class:`DecryptionError` otherwise."""
    header, nonce = token[:_HEADER_SIZE], token[_HEADER_SIZE : _HEADER_SIZE + NONCE_SIZE]
    if not header.startswith(VERSION) or len(nonce) != NONCE_SIZE:
        raise DecryptionError("not an encrypted value of a known version")
    cipher = _keys().ciphers.get(header[len(VERSION) :])
    if cipher is None:
        raise DecryptionError("encrypted with a key that is no longer configured")
    try:
        return cipher.decrypt(nonce, token[_HEADER_SIZE + NONCE_SIZE :], header)
    except InvalidTag as exc:
        raise DecryptionError("the encrypted value was altered") from exc


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

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return self.from_bytes(decrypt(bytes(value)))

    def get_lookup(self, lookup_name):
        # Every write has a fresh nonce: only NULL-ness can be compared in SQL.
        return super().get_lookup(lookup_name) if lookup_name == "isnull" else None


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
