"""Per-provider rate limits: a token bucket in Redis shared by every worker.

A send that finds the bucket empty is not dropped: the caller gets the wait in seconds and puts
the delivery back in the queue for that long. The bucket keeps time by Redis's clock, not the
workers': a worker whose clock lags another's would otherwise see the bucket refill backwards
and wait with tokens left.
"""

from __future__ import annotations

import functools
import logging

import redis
from django.conf import settings
from redis.commands.core import Script

from notifications.providers.base import Provider

logger = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV rate, burst. Returns the wait in milliseconds (0 = a token was taken).
_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return wait
"""


@functools.lru_cache(maxsize=4)
def _script_for(url: str) -> Script:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return client.register_script(_LUA)


def _get() -> Script:
    return _script_for(settings.REDIS_URL)


def acquire(provider: Provider) -> float:
    """Seconds to wait before ``provider`` may be called (0: go now)."""
    rate = provider.rate_per_second
    if not rate:
        return 0.0
    try:
        wait_ms = _get()(
            keys=[f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:ratelimit:{provider.alias}"],
            args=[rate, provider.burst],
        )
    except redis.RedisError as exc:
        logger.warning("rate limiter unavailable; sending", extra={"error": str(exc)})
        return 0.0
    return int(wait_ms) / 1000.0
