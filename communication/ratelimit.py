"""HTTP rate limits: per principal and endpoint group, counted with GCRA in Redis.

GCRA (the generic cell rate algorithm) keeps one number per (group, principal): the theoretical
arrival time (TAT) of the next request. A limit of ``count`` per ``period`` admits a request when
``TAT - period`` is not in the future, and moves the TAT on by ``period / count``. It is checked
and moved by one Lua script (one EVALSHA per request) reading Redis's own clock, so every web
process shares one count and concurrent requests cannot both take the last slot: ``count``
requests in parallel against an unused limit are all admitted, and the next is refused.

When Redis cannot be reached the same algorithm runs in the process (a limit per process rather
than a shared one) and the switch is logged, so that losing what Redis holds never refuses all
traffic. Redis is tried again after ``_REDIS_RETRY_SECONDS``.

``RATE_LIMITS`` (the setting) names a limit per group; see :func:`parse_limits`.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.http import HttpRequest
from redis.commands.core import Script

logger = logging.getLogger(__name__)

GROUPS = ("send", "write", "read", "upload")
DEFAULTS = {"send": "600/m", "write": "600/m", "read": "1200/m", "upload": "60/m"}
_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
# After a Redis error the process limits by itself for this long before trying Redis again, so
# that an unreachable Redis costs one connection timeout per period, not one per request.
_REDIS_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Limit:
    count: int
    period: float  # seconds

    @property
    def interval_us(self) -> int:
        """Microseconds between two requests at the sustained rate."""
        return max(1, round(self.period * 1_000_000 / self.count))

    @property
    def period_us(self) -> int:
        return self.interval_us * self.count


def parse_limits(raw: str) -> dict[str, Limit | None] | None:
    """``RATE_LIMITS`` as ``{group: Limit | None}`` (None: that group is not limited), or None
    when the value is ``off``. Groups left out keep their default. ``ValueError`` names what is
    wrong with a bad value."""
    raw = raw.strip()
    if raw.lower() == "off":
        return None
    given: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        group, sep, rate = (s.strip() for s in item.partition("="))
        if not sep or group not in GROUPS:
            raise ValueError(
                f"RATE_LIMITS: {item!r} is not <group>=<count>/<unit> with a group among "
                f"{', '.join(GROUPS)}"
            )
        given[group] = rate
    return {group: _parse_rate(group, given.get(group, DEFAULTS[group])) for group in GROUPS}


def _parse_rate(group: str, rate: str) -> Limit | None:
    if rate.lower() == "off":
        return None
    count, sep, unit = rate.partition("/")
    seconds = _UNITS.get(unit.strip().lower())
    if not sep or seconds is None or not count.strip().isdigit() or int(count) <= 0:
        raise ValueError(
            f"RATE_LIMITS: {group}={rate!r} is not <count>/<unit> (a positive count, a unit "
            "among s, m, h, d) or off"
        )
    return Limit(int(count), float(seconds))


# Parsed once per value of the setting (a test that changes it gets the new value parsed).
_parsed_limits = functools.lru_cache(maxsize=16)(parse_limits)


def limit_for(group: str) -> Limit | None:
    """The limit in force for ``group`` (None: not limited)."""
    limits = _parsed_limits(settings.RATE_LIMITS)
    return None if limits is None else limits.get(group)


def client_ip(request: HttpRequest) -> str:
    """The client's address: with ``TRUSTED_PROXY_COUNT`` proxies in front, the entry of
    ``X-Forwarded-For`` that the outermost of them appended; entries before it are whatever the
    client chose to send and are ignored."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies > 0:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        if forwarded:
            candidate = forwarded[-min(proxies, len(forwarded))]
            try:
                return str(ipaddress.ip_address(candidate))
            except ValueError:
                pass  # not an address: a proxy we trust would not write that; use the peer
    return request.META.get("REMOTE_ADDR") or "unknown"


# KEYS[1] the TAT; ARGV[1] interval, ARGV[2] period (µs). Returns 0 when admitted, else the µs
# to wait. Redis's clock, not the callers', so processes on several machines agree.
_GCRA = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now then
  return allow_at - now
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return 0
"""


@functools.lru_cache(maxsize=4)
def _script_for(url: str) -> Script:
    # Short timeouts: this is on every request's path, and a slow Redis must fall back quickly.
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return client.register_script(_GCRA)


class _LocalLimiter:
    """GCRA in this process, for when Redis cannot be reached."""

    _MAX_KEYS = 10_000

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, limit: Limit) -> float:
        interval = limit.period / limit.count
        now = time.monotonic()
        with self._lock:
            tat = max(self._tat.get(key, now), now)
            allow_at = tat + interval - limit.period
            if allow_at > now:
                return allow_at - now
            self._tat[key] = tat + interval
            if len(self._tat) > self._MAX_KEYS:  # forget the keys whose TAT is past
                self._tat = {k: v for k, v in self._tat.items() if v > now}
        return 0.0

    def clear(self) -> None:
        with self._lock:
            self._tat.clear()


class Limiter:
    """GCRA in Redis, falling back to ``_LocalLimiter`` while Redis is unreachable."""

    def __init__(self) -> None:
        self.local = _LocalLimiter()
        self._redis_down_until = 0.0  # monotonic; 0 while Redis answers

    def acquire(self, key: str, limit: Limit) -> float:
        """Takes one request from ``key``'s allowance: 0 when admitted, else the seconds to
        wait."""
        if self._redis_down_until and time.monotonic() < self._redis_down_until:
            return self.local.acquire(key, limit)
        try:
            wait_us = _script_for(settings.REDIS_URL)(
                keys=[key], args=[limit.interval_us, limit.period_us]
            )
        except redis.RedisError as exc:
            if not self._redis_down_until:
                logger.warning(
                    "rate limits: Redis unreachable, limiting per process",
                    extra={"error": str(exc)},
                )
            self._redis_down_until = time.monotonic() + _REDIS_RETRY_SECONDS
            return self.local.acquire(key, limit)
        if self._redis_down_until:
            self._redis_down_until = 0.0
            self.local.clear()
            logger.warning("rate limits: Redis reachable again, limiting in Redis")
        return int(wait_us) / 1_000_000


limiter = Limiter()


def key_for(group: str, principal: str) -> str:
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    return f"{prefix}:rl:{group}:{principal}"


def retry_after(wait: float) -> int:
    """Whole seconds for a ``Retry-After`` (at least 1: 0 would invite an immediate retry)."""
    return max(1, math.ceil(wait))
