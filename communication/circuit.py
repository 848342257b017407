"""A circuit breaker shared by every process through Redis.

``closed`` → after ``failure_threshold`` failures within ``window`` seconds → ``open`` for
``reset_timeout`` seconds (calls are refused at once) → ``half_open``: one trial call is let through;
its success closes the circuit, its failure opens it again. Used by the identity client and, later,
each provider. When Redis itself is unavailable the breaker lets calls through (fail open): it
protects a dependency, it must not become one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.core.cache import cache

logger = logging.getLogger(__name__)


class CircuitOpenError(Exception):
    def __init__(self, name: str, retry_in: float):
        super().__init__(f"circuit {name!r} is open; retry in {retry_in:.0f}s")
        self.name = name
        self.retry_in = retry_in


@dataclass
class CircuitBreaker:
    name: str
    failure_threshold: int = 5
    reset_timeout: float = 30.0
    window: float = 60.0

    def _key(self, part: str) -> str:
        return f"circuit:{self.name}:{part}"

    def state(self) -> str:
        try:
            opened_at = cache.get(self._key("opened_at"))
        except Exception:
            return "closed"
        if opened_at is None:
            return "closed"
        return "open" if time.time() - opened_at < self.reset_timeout else "half_open"

    def before_call(self) -> None:
        """Raises CircuitOpenError when the call must not be made."""
        try:
            opened_at = cache.get(self._key("opened_at"))
            if opened_at is None:
                return
            elapsed = time.time() - opened_at
            if elapsed < self.reset_timeout:
                raise CircuitOpenError(self.name, self.reset_timeout - elapsed)
            # Half-open: one trial at a time across all processes.
            if not cache.add(self._key("trial"), 1, timeout=max(int(self.reset_timeout), 1)):
                raise CircuitOpenError(self.name, self.reset_timeout)
        except CircuitOpenError:
            raise
        except Exception:
            logger.warning(
                "circuit state unavailable; letting the call through", extra={"circuit": self.name}
            )

    def record_success(self) -> None:
        try:
            if cache.get(self._key("opened_at")) is not None:
                logger.info("circuit closed", extra={"circuit": self.name})
            cache.delete_many([self._key("opened_at"), self._key("failures"), self._key("trial")])
        except Exception:
            pass

    def record_failure(self) -> None:
        try:
            key = self._key("failures")
            if cache.add(key, 0, timeout=int(self.window)):
                pass
            failures = cache.incr(key)
            half_open = cache.get(self._key("trial")) is not None
            if failures >= self.failure_threshold or half_open:
                cache.set(self._key("opened_at"), time.time(), timeout=None)
                cache.delete(self._key("trial"))
                logger.warning("circuit opened", extra={"circuit": self.name, "failures": failures})
        except Exception:
            pass

    def reset(self) -> None:
        self.record_success()
