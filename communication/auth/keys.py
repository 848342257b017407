"""Signing keys: the JWKS we verify against, and the development key pair that signs local tokens.

In development (``APP_ENV=development`` and no ``IDENTITY_JWKS_URL``) an RSA key pair is generated
under ``VAR_DIR`` on first use; its public half is served at ``/.well-known/jwks.json`` and used to
verify tokens, exactly as a remote JWKS would be.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import threading
import time
from functools import lru_cache

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = {"RS256", "RS384", "RS512", "ES256", "ES384", "PS256"}
_KTY_FOR_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC"}


class JWKSUnavailableError(Exception):
    pass


def allowed_algorithms() -> set[str]:
    # Only asymmetric algorithms can be allowed: an HS* token "signed" with our public key, or an
    # unsigned one, must never verify, whatever the configuration says.
    return {a for a in settings.JWT_ALGORITHMS if a in ALLOWED_ALGORITHMS}


def kty_for(alg: str) -> str:
    return _KTY_FOR_ALG[alg[:2]]


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rsa_public_jwk(public_key) -> dict:
    numbers = public_key.public_numbers()
    jwk = {"kty": "RSA", "n": _b64(numbers.n), "e": _b64(numbers.e)}
    # RFC 7638 thumbprint as kid: stable for the key, changes when the key does.
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    kid = (
        base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    )
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


# ------------------------------------------------------------------------------ development keys


def dev_mode() -> bool:
    return settings.DEVELOPMENT and not settings.IDENTITY_JWKS_URL


@lru_cache(maxsize=1)
def dev_private_key():
    path = settings.DEV_SIGNING_KEY_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    # Several processes may start at once (web, worker, tests): one generates, the others read.
    with open(str(path) + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            path.write_bytes(pem)
            path.chmod(0o600)
        data = path.read_bytes()
    return serialization.load_pem_private_key(data, password=None)


def dev_jwks() -> dict:
    return {"keys": [rsa_public_jwk(dev_private_key().public_key())]}


def dev_sign(claims: dict) -> str:
    key = dev_private_key()
    kid = rsa_public_jwk(key.public_key())["kid"]
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


# ---------------------------------------------------------------------------------------- JWKS


class JWKSClient:
    """Keys by ``kid`` from the identity service's JWKS, or from the development key pair.

    A remote key set is cached in process and in Redis (shared by every process) for
    ``JWKS_CACHE_SECONDS``, under a key of its URL: a set fetched from one source is never
    taken for another's (after a restart with another ``IDENTITY_JWKS_URL``, or none). A token
    with an unknown ``kid`` triggers one refetch, at most once per ``JWKS_MIN_REFRESH_INTERVAL``
    across all processes (per URL), so random ``kid``s cannot hammer the identity service.
    Key-location headers (``jku``, ``x5u``, ``jwk``) are never followed: keys come only from the
    configured URL. The development key pair is read from this process's own key, with no
    Redis cache and no refetch.
    """

    CACHE_KEY = "auth:jwks"
    REFETCH_KEY = "auth:jwks:refetch"

    def __init__(self):
        self._lock = threading.Lock()
        self._url = ""
        self._keys: dict[str, dict] = {}
        self._fetched_at = 0.0
        self._last_refetch = 0.0

    def reset(self) -> None:
        with self._lock:
            self._url, self._keys, self._fetched_at, self._last_refetch = "", {}, 0.0, 0.0

    @staticmethod
    def scoped(key: str, url: str) -> str:
        """``key`` for the key set of ``url`` (a hash: the URL may be long or hold a secret)."""
        return f"{key}:{hashlib.sha256(url.encode()).hexdigest()[:24]}"

    def _fetch(self, url: str) -> dict:
        try:
            response = requests.get(url, timeout=settings.IDENTITY_TIMEOUT)
            response.raise_for_status()
            data = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise JWKSUnavailableError(f"JWKS could not be fetched: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise JWKSUnavailableError("JWKS answer has no 'keys' list")
        return data

    def _load(self, url: str, *, force: bool) -> dict[str, dict]:
        now = time.monotonic()
        if not force and self._keys and now - self._fetched_at < settings.JWKS_CACHE_SECONDS:
            return self._keys
        data = None
        if not force:
            data = _cache_get(self.scoped(self.CACHE_KEY, url))
        if data is None:
            data = self._fetch(url)
            _cache_set(self.scoped(self.CACHE_KEY, url), data, settings.JWKS_CACHE_SECONDS)
        self._keys = {k["kid"]: k for k in data["keys"] if isinstance(k, dict) and k.get("kid")}
        self._fetched_at = now
        return self._keys

    def _may_refetch(self, url: str) -> bool:
        interval = settings.JWKS_MIN_REFRESH_INTERVAL
        now = time.monotonic()
        if now - self._last_refetch < interval:
            return False
        self._last_refetch = now
        try:
            return bool(cache.add(self.scoped(self.REFETCH_KEY, url), 1, timeout=interval))
        except Exception:  # Redis down: the per-process limit above still holds
            return True

    def get(self, kid: str) -> dict | None:
        if dev_mode():
            return _dev_keys().get(kid)
        url = settings.IDENTITY_JWKS_URL
        if not url:
            raise JWKSUnavailableError("IDENTITY_JWKS_URL is not configured")
        with self._lock:
            if url != self._url:
                # Another source (settings changed in this process): nothing of the last one.
                self._url, self._keys, self._fetched_at, self._last_refetch = url, {}, 0.0, 0.0
            keys = self._load(url, force=False)
            if kid in keys:
                return keys[kid]
            if self._may_refetch(url):
                logger.info("unknown kid, refetching JWKS", extra={"kid": kid[:64]})
                keys = self._load(url, force=True)
            return keys.get(kid)


def _dev_keys() -> dict[str, dict]:
    return _public_keys_of(dev_private_key())


@lru_cache(maxsize=2)
def _public_keys_of(private_key) -> dict[str, dict]:
    # Once per key: every authenticated request looks its key up.
    jwk = rsa_public_jwk(private_key.public_key())
    return {jwk["kid"]: jwk}


def _cache_get(key):
    try:
        return cache.get(key)
    except Exception:
        return None


def _cache_set(key, value, timeout):
    try:
        cache.set(key, value, timeout)
    except Exception:
        logger.warning("cache unavailable; JWKS kept in process only")


jwks_client = JWKSClient()
