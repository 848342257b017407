"""A reference client for end-to-end encrypted conversations (the protocol the README
describes), with ``cryptography``. The server never runs this: it stores what it makes.

Per device: an X25519 identity key, an Ed25519 signing key and an X25519 signed prekey (signed
by the signing key; published for a later prekey protocol, not used to wrap).

A message: a random 32-byte content key ``ck`` and 12-byte ``nonce``;
``ciphertext = AES-256-GCM(ck, nonce, utf-8 text, aad = content_aad(...))``. For each recipient
device (every device of every member, the sender's own included), with a fresh X25519 key pair
``eph``::

    ikm  = X25519(eph, recipient identity) || X25519(sender identity, recipient identity)
    kek  = HKDF-SHA256(ikm, salt = eph public (32 bytes), info = wrap_info(...), length 32)
    wrapped_key = eph public (32) || wnonce (12) || AES-256-GCM(kek, wnonce, ck, aad none) (48)

The first exchange makes every wrap's key fresh; the second proves the sender's identity key
(only it or the recipient's could compute it).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ALG = "x25519-hkdf-sha256+aes-256-gcm"
RAW = {"encoding": serialization.Encoding.Raw, "format": serialization.PublicFormat.Raw}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def content_aad(conversation_id: str, sender_user: str, sender_device: str) -> bytes:
    return f"{ALG}|content|{conversation_id}|{sender_user}|{sender_device}".encode()


def wrap_info(
    conversation_id: str, sender_user: str, sender_device: str, user: str, device: str
) -> bytes:
    return f"{ALG}|wrap|{conversation_id}|{sender_user}|{sender_device}|{user}|{device}".encode()


def _kek(ikm: bytes, eph_public: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_public, info=info).derive(ikm)


@dataclass
class Device:
    user_id: str
    device_id: str
    identity: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    signer: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    prekey: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    # (user id, device id) → identity public key, from the key directory, signatures checked.
    directory: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def published(self) -> dict:
        """The body of ``PUT /api/v1/keys/devices/{device_id}``."""
        prekey = self.prekey.public_key().public_bytes(**RAW)
        return {
            "identity_key": b64(self.identity.public_key().public_bytes(**RAW)),
            "signed_prekey": {"key": b64(prekey), "signature": b64(self.signer.sign(prekey))},
            "signing_key": b64(self.signer.public_key().public_bytes(**RAW)),
        }

    def learn(self, keys: dict) -> None:
        """Takes a ``GET /api/v1/keys/users/{user_id}`` answer; refuses a bad prekey signature."""
        for d in keys["devices"]:
            signer = Ed25519PublicKey.from_public_bytes(unb64(d["signing_key"]))
            signer.verify(unb64(d["signed_prekey"]["signature"]), unb64(d["signed_prekey"]["key"]))
            self.directory[(keys["user_id"], d["device_id"])] = unb64(d["identity_key"])

    def encrypt(self, conversation_id: str, text: str) -> dict:
        """The envelope of ``text`` for every device in the directory (and this one)."""
        ck, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
        aad = content_aad(conversation_id, self.user_id, self.device_id)
        ciphertext = AESGCM(ck).encrypt(nonce, text.encode(), aad)
        recipients = dict(self.directory)
        recipients[(self.user_id, self.device_id)] = self.identity.public_key().public_bytes(**RAW)
        keys = []
        for (user, device), identity in recipients.items():
            peer = X25519PublicKey.from_public_bytes(identity)
            eph = X25519PrivateKey.generate()
            eph_public = eph.public_key().public_bytes(**RAW)
            ikm = eph.exchange(peer) + self.identity.exchange(peer)
            info = wrap_info(conversation_id, self.user_id, self.device_id, user, device)
            wnonce = os.urandom(12)
            wrapped = AESGCM(_kek(ikm, eph_public, info)).encrypt(wnonce, ck, None)
            keys.append(
                {
                    "user_id": user,
                    "device_id": device,
                    "wrapped_key": b64(eph_public + wnonce + wrapped),
                }
            )
        return {
            "alg": ALG,
            "ciphertext": b64(ciphertext),
            "nonce": b64(nonce),
            "sender_device": self.device_id,
            "keys": keys,
        }

    def decrypt(self, conversation_id: str, sender_user: str, envelope: dict) -> str:
        """The text of a message ``sender_user`` sent (its payload's ``sender``)."""
        assert envelope["alg"] == ALG
        sender_device = envelope["sender_device"]
        entry = next(
            k
            for k in envelope["keys"]
            if k["device_id"] == self.device_id and k.get("user_id", self.user_id) == self.user_id
        )
        raw = unb64(entry["wrapped_key"])
        eph_public, wnonce, wrapped = raw[:32], raw[32:44], raw[44:]
        if sender_user == self.user_id and sender_device == self.device_id:
            sender_identity = self.identity.public_key().public_bytes(**RAW)
        else:
            sender_identity = self.directory[(sender_user, sender_device)]
        ikm = self.identity.exchange(
            X25519PublicKey.from_public_bytes(eph_public)
        ) + self.identity.exchange(X25519PublicKey.from_public_bytes(sender_identity))
        info = wrap_info(conversation_id, sender_user, sender_device, self.user_id, self.device_id)
        ck = AESGCM(_kek(ikm, eph_public, info)).decrypt(wnonce, wrapped, None)
        aad = content_aad(conversation_id, sender_user, sender_device)
        return (
            AESGCM(ck)
            .decrypt(unb64(envelope["nonce"]), unb64(envelope["ciphertext"]), aad)
            .decode()
        )
