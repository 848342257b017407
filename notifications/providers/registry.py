"""Provider chains per channel, built from settings (``EMAIL_PROVIDERS``, ``SMS_PROVIDERS`` …).

A provider whose credentials are missing is logged and left out; a channel whose chain is empty
delivers to the development outbox. Chains are built once per process and rebuilt when a test
changes the settings.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from communication.circuit import CircuitBreaker
from notifications.providers.base import Provider, ProviderNotConfiguredError
from notifications.providers.outbox import OutboxProvider

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_chains: dict[str, list[Provider]] = {}


def _aliases(channel: str) -> list[str]:
    return {
        "email": settings.EMAIL_PROVIDERS,
        "sms": settings.SMS_PROVIDERS,
        "push": settings.PUSH_PROVIDERS,
    }.get(channel, [])


def build(alias: str) -> Provider:
    config = settings.NOTIFICATION_PROVIDERS.get(alias)
    if config is None:
        raise ProviderNotConfiguredError(f"no provider named {alias!r} in NOTIFICATION_PROVIDERS")
    cls = import_string(config["BACKEND"])
    provider: Provider = cls(alias, dict(config.get("OPTIONS", {})))
    return provider


def chain(channel: str) -> list[Provider]:
    """The ordered providers of ``channel``; the outbox when none is configured."""
    with _lock:
        if channel not in _chains:
            providers: list[Provider] = []
            for alias in _aliases(channel):
                try:
                    providers.append(build(alias))
                except ProviderNotConfiguredError as exc:
                    logger.info(
                        "provider left out of the chain",
                        extra={"provider": alias, "channel": channel, "why": str(exc)},
                    )
                except ImportError as exc:
                    logger.error(
                        "provider cannot be loaded", extra={"provider": alias, "error": str(exc)}
                    )
            if not providers:
                providers = [OutboxProvider("outbox", {"CHANNEL": channel})]
            _chains[channel] = providers
        return _chains[channel]


def provider_breaker(alias: str) -> CircuitBreaker:
    """The circuit breaker of the provider ``alias``, shared by every process through the cache
    (the chain and the push fan-out ask it before a call and tell it how the call went)."""
    return CircuitBreaker(
        f"provider:{alias}",
        failure_threshold=settings.PROVIDER_BREAKER_THRESHOLD,
        reset_timeout=settings.PROVIDER_BREAKER_RESET_SECONDS,
    )


def reset() -> None:
    with _lock:
        _chains.clear()


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("NOTIFICATION_PROVIDERS", "EMAIL_PROVIDERS", "SMS_PROVIDERS", "PUSH_PROVIDERS"):
        reset()


setting_changed.connect(_on_setting_changed)
