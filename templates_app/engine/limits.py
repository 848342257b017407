"""Caps on one render and the budget it spends: sizes, items, iterations and the deadline.

The render state lives in a context variable so that filters, guards and the sandbox's hooks
reach the budget of the render that runs them.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import time
from dataclasses import dataclass

import babel
from django.conf import settings

from templates_app import errors
from templates_app.engine.locales import locale_for


@dataclass(frozen=True)
class Limits:
    """Caps on one render. Settings ``TEMPLATES_<NAME>`` (upper case) override each default."""

    max_output: int = 512 * 1024  # characters per rendered field, and per intermediate string
    max_range: int = 10_000  # items in one range()
    max_iterations: int = 100_000  # loop iterations and calls in one render
    time_limit: float = 1.0  # seconds of wall time for one render
    max_int_bits: int = 4096  # size of an integer built with * or **
    max_width: int = 1_000  # width arguments of center/indent/wordwrap …
    max_items: int = 10_000  # items of a collection a step produces; words of a wordwrap …
    sms_max_segments: int = 10

    @classmethod
    def from_settings(cls) -> Limits:
        overrides = {}
        for name in cls.__dataclass_fields__:
            value = getattr(settings, f"TEMPLATES_{name.upper()}", None)
            if value is not None:
                overrides[name] = value
        return cls(**overrides)


class RenderState:
    """Per-render budget and locale, reached by filters and guards through a context variable."""

    __slots__ = ("deadline", "limits", "locale", "measured", "ops", "tzinfo")

    def __init__(self, limits: Limits, locale: babel.Locale, tzinfo: dt.tzinfo):
        self.limits = limits
        self.locale = locale
        self.tzinfo = tzinfo
        self.ops = 0
        self.deadline = time.monotonic() + limits.time_limit
        # Collections already measured, by id, holding the object so that its id is not reused
        # by another while the render runs: the caller's data is walked once, not per filter.
        self.measured: dict[int, object] = {}


_state: contextvars.ContextVar[RenderState | None] = contextvars.ContextVar(
    "template_render_state", default=None
)
_DEFAULT_LIMITS = Limits()


def _current() -> RenderState:
    state = _state.get()
    if state is None:  # outside render(): Jinja's optimizer folding a constant, the shell
        state = RenderState(_DEFAULT_LIMITS, locale_for("en"), dt.UTC)
    return state


def _tick(state: RenderState) -> None:
    state.ops += 1
    if state.ops > state.limits.max_iterations:
        raise errors.RenderLimitError(
            f"The template runs more than {state.limits.max_iterations} loop iterations or calls."
        )
    _check_deadline(state)


def _check_deadline(state: RenderState) -> None:
    if time.monotonic() > state.deadline:
        raise errors.RenderLimitError(
            f"The template took longer than {state.limits.time_limit:g} s to render."
        )


def _check_size(size: int, what: str = "A value") -> None:
    limit = _current().limits.max_output
    if size > limit:
        raise errors.RenderLimitError(f"{what} would exceed {limit} characters.")


_COLLECTIONS = (list, tuple, dict, set, frozenset)


def _check_value(value, what: str = "A value"):
    """Refuses ``value`` when it holds more than ``max_output`` characters, counting every string
    inside it, one per item and a few per number, or is a collection of more than ``max_items``
    items; returns it.

    What a value weighs bounds what turning it into text costs (``str()`` of a list, ``|string``,
    ``|tojson``, output): a list of ten references to one large string is ten times that string.
    The walk stops as soon as the cap is passed, so measuring costs at most the cap.
    """
    if isinstance(value, str):
        _check_size(len(value), what)
        return value
    if not isinstance(value, _COLLECTIONS):
        return value
    state = _current()
    if id(value) in state.measured:
        return value
    limits = state.limits
    if len(value) > limits.max_items:
        raise errors.RenderLimitError(f"{what} would hold more than {limits.max_items} items.")
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 1
        elif isinstance(item, _COLLECTIONS):
            total += 1
            if id(item) not in state.measured:
                stack.extend(item.items() if isinstance(item, dict) else item)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += 1 + item.bit_length() // 3
        else:
            total += 1
        if total > limits.max_output:
            raise errors.RenderLimitError(f"{what} would exceed {limits.max_output} characters.")
    state.measured[id(value)] = value
    return value


def _check_words(text: str, name: str, pieces: int = 0) -> None:
    """Refuses more than ``max_items`` words (plus ``pieces``) for a filter that loops over the
    words of its input in Python, where one call could not be interrupted."""
    limit = _current().limits.max_items
    if pieces > limit or len(text.split()) + pieces > limit:
        raise errors.RenderLimitError(f"The {name} filter takes at most {limit} words.")
