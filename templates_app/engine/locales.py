"""Locales and time zones a render formats in, and the language fallback chain."""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

import babel


@functools.lru_cache(maxsize=256)
def locale_for(tag: str) -> babel.Locale:
    """The Babel locale for a BCP 47 tag, falling back to its language, then English."""
    for candidate in (tag, tag.split("-", maxsplit=1)[0], "en"):
        try:
            return babel.Locale.parse(candidate.replace("-", "_"))
        except (babel.UnknownLocaleError, ValueError, TypeError):
            continue
    return babel.Locale("en")


@functools.lru_cache(maxsize=256)
def tzinfo_for(name: str) -> dt.tzinfo:
    if not name:
        return dt.UTC
    return zoneinfo.ZoneInfo(name)


def language_chain(requested: str | None, default: str) -> list[str]:
    """``fr-CA`` with default ``en`` → ``["fr-CA", "fr", "en"]``."""
    chain: list[str] = []
    for tag in (requested or "", default):
        if not tag:
            continue
        parts = tag.split("-")
        for i in range(len(parts), 0, -1):
            candidate = "-".join(parts[:i])
            if candidate not in chain:
                chain.append(candidate)
    return chain
