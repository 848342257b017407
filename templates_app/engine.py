"""The rendering engine: a hardened Jinja2 sandbox with locale-aware filters.

Templates are written by staff, rendered for everyone: nothing in one may reach Python internals
or exhaust the worker. The layers, outermost first:

1. A static check of the parsed template refuses what no message needs: underscore names and
   attributes, ``str.format``/``format_map``, ``|attr``, ``self``/``config``/``request``, imports
   and includes. Its errors are clearer than the sandbox's, and it runs when a draft is saved.
2. Jinja2's ``ImmutableSandboxedEnvironment`` at run time, narrowed further: strings and numbers
   expose an allow-list of methods (no ``ljust(10**9)``, ``to_bytes``, ``translate``), ``%`` on
   strings is refused, ``lipsum``/``cycler``/``joiner`` are gone.
3. Resource caps, because the sandbox alone lets ``'x' * 10**8`` build 100 MB: ``*``, ``**`` and
   ``+`` are intercepted and size-checked, ``~`` concatenation is compiled into a checked join,
   ``range`` and loop iterations are capped, every call and loop iteration checks a deadline
   (a signal alarm only works on the main thread, and workers render on others), output is
   capped per field and size-amplifying filters check their arguments.
4. Bounded by construction, because a single C-level operation cannot be interrupted: every value
   a filter, method, operator, literal or block produces is measured (characters of its strings
   and items of its collections, however nested) and refused past the caps, so that each single
   step of a render works on a small value; word-by-word filters (wordwrap, urlize, title) take a
   bounded number of words; every filter checks the deadline.
5. Renders run on a small executor of their own (:mod:`templates_app.executor`), so that a
   request thread waits for one at most its time limit, and hostile renders queue behind each
   other instead of holding every thread that answers HTTP.

Compiled templates are cached in process per version and field; a version's sources never change
once approved, so the cache needs no invalidation, only a bound.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import re
import threading
import time
import zoneinfo
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal

import babel
import babel.dates
import babel.numbers
import css_inline
from django.conf import settings
from jinja2 import Undefined, nodes
from jinja2 import exceptions as jinja_exceptions
from jinja2.compiler import CodeGenerator
from jinja2.filters import (
    do_batch,
    do_center,
    do_indent,
    do_join,
    do_replace,
    do_title,
    do_urlencode,
    do_urlize,
    do_wordwrap,
    sync_do_slice,
)
from jinja2.runtime import StrictUndefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import (
    Namespace,
    _PassArg,
    missing,
    pass_context,
    pass_environment,
    pass_eval_context,
)
from lxml import etree
from lxml import html as lxml_html
from markupsafe import Markup, soft_str

from templates_app import errors, executor
from templates_app.sms import non_gsm7, normalize, sms_info

# ----------------------------------------------------------------------------------- limits


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


# --------------------------------------------------------------------------------- locales


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


# --------------------------------------------------------------------------------- filters


def _as_datetime(value) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        value = dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    raise TypeError(f"expected a date and time, got {type(value).__name__}")


def _as_date(value) -> dt.date:
    if isinstance(value, dt.datetime):
        return _as_datetime(value).astimezone(_current().tzinfo).date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and len(value) == 10:
        return dt.date.fromisoformat(value)
    return _as_datetime(value).astimezone(_current().tzinfo).date()


def _as_number(value):
    if isinstance(value, bool):
        raise TypeError("expected a number, got a boolean")
    if isinstance(value, (int, Decimal)):
        return value
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, str):
        return Decimal(value.strip())
    raise TypeError(f"expected a number, got {type(value).__name__}")


@pass_context
def filter_date(context, value, format: str = "medium") -> str:
    """``{{ due|date }}``, ``{{ due|date('full') }}``, ``{{ due|date('d MMM') }}``."""
    return babel.dates.format_date(_as_date(value), format=format, locale=_current().locale)


@pass_context
def filter_time(context, value, format: str = "short") -> str:
    """``{{ starts_at|time }}`` in the recipient's time zone."""
    state = _current()
    return babel.dates.format_time(
        _as_datetime(value), format=format, tzinfo=state.tzinfo, locale=state.locale
    )


@pass_context
def filter_datetime(context, value, format: str = "medium") -> str:
    """``{{ sent_at|datetime('short') }}`` in the recipient's time zone."""
    state = _current()
    return babel.dates.format_datetime(
        _as_datetime(value), format=format, tzinfo=state.tzinfo, locale=state.locale
    )


@pass_context
def filter_timedelta(
    context,
    value,
    granularity: str = "second",
    add_direction: bool = False,
    format: str = "long",
) -> str:
    """``{{ 3600|timedelta }}`` → "1 hour"; ``add_direction=true`` → "in 1 hour"."""
    if not isinstance(value, dt.timedelta):
        value = dt.timedelta(seconds=float(_as_number(value)))
    # The options are a template author's strings, checked by babel (not narrowed to its literals).
    return babel.dates.format_timedelta(
        value,
        granularity=granularity,  # type: ignore[arg-type]
        add_direction=add_direction,
        format=format,  # type: ignore[arg-type]
        locale=_current().locale,
    )


def _fixed(pattern: str, decimals, locale: babel.Locale, number) -> str:
    """``number`` with the locale's pattern but exactly ``decimals`` fraction digits."""
    places = int(decimals)
    if not 0 <= places <= 20:
        raise ValueError("decimals must be between 0 and 20")
    parsed = babel.numbers.parse_pattern(pattern)
    parsed.frac_prec = (places, places)
    return parsed.apply(number, locale)


def _localized(value, decimals: int | None, *, percent: bool) -> str:
    """``value`` as a number (or a percentage) in the render's locale, to ``decimals`` places
    when given."""
    locale = _current().locale
    number = _as_number(value)
    if decimals is not None:
        formats = locale.percent_formats if percent else locale.decimal_formats
        return _fixed(formats[None].pattern, decimals, locale, Decimal(number))
    if percent:
        return babel.numbers.format_percent(number, locale=locale)
    return babel.numbers.format_decimal(number, locale=locale)


@pass_context
def filter_number(context, value, decimals: int | None = None) -> str:
    """``{{ 1234.5|number }}`` → "1,234.5" (en) / "1 234,5" (fr); ``decimals`` fixes the places."""
    return _localized(value, decimals, percent=False)


@pass_context
def filter_currency(context, value, currency: str, format_type: str = "standard") -> str:
    """``{{ total|currency('EUR') }}`` → "€12.50" (en) / "12,50 €" (fr)."""
    if not isinstance(currency, str) or len(currency) != 3:
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code")
    return babel.numbers.format_currency(
        _as_number(value),
        currency.upper(),
        locale=_current().locale,
        format_type=format_type,  # type: ignore[arg-type]  # babel refuses an unknown type
    )


@pass_context
def filter_percent(context, value, decimals: int | None = None) -> str:
    """``{{ 0.256|percent }}`` → "26%"; ``decimals`` keeps places."""
    return _localized(value, decimals, percent=True)


# Size-amplifying builtins, with their arguments checked first.


def _guard_width(width, name: str) -> None:
    limit = _current().limits.max_width
    if isinstance(width, int) and width > limit:
        raise errors.RenderLimitError(f"The {name} width {width} exceeds {limit}.")


def filter_center(value, width: int = 80) -> str:
    _guard_width(width, "center")
    return do_center(value, width)


def filter_indent(s, width=4, first=False, blank=False):
    _guard_width(width if isinstance(width, int) else len(str(width)), "indent")
    _check_size(len(str(s)) * (1 + (width if isinstance(width, int) else len(str(width)))))
    return do_indent(s, width, first, blank)


@pass_environment
def filter_wordwrap(
    env, s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True
):
    if wrapstring is not None and len(wrapstring) > 10:
        raise errors.RenderLimitError("wordwrap's wrapstring may be at most 10 characters.")
    text = soft_str(s)
    # textwrap works piece by piece in Python (a long word at width 1 is one piece per
    # character), and cuts a long word by copying the rest of it each time.
    lines = len(text) // width if isinstance(width, int) and width > 0 else len(text)
    _check_words(text, "wordwrap", lines)
    limit = 8 * _current().limits.max_items
    if len(text) > limit:
        raise errors.RenderLimitError(f"The wordwrap filter takes at most {limit} characters.")
    return do_wordwrap(env, s, width, break_long_words, wrapstring, break_on_hyphens)


@pass_eval_context
def filter_urlize(eval_ctx, value, *args, **kwargs):
    _check_words(soft_str(value), "urlize")
    return do_urlize(eval_ctx, value, *args, **kwargs)


def filter_urlencode(value):
    # Quoting runs byte by byte in Python and a character may become nine ("%C3%A9" …).
    if isinstance(value, str):
        _check_size(9 * len(value), "The URL-encoded value")
    return do_urlencode(value)


def filter_title(s):
    _check_words(soft_str(s), "title", soft_str(s).count("-"))
    return do_title(s)


@pass_eval_context
def filter_replace(eval_ctx, s, old, new, count=None):
    text, old_s, new_s = str(s), str(old), str(new)
    occurrences = text.count(old_s) if count is None else min(int(count), text.count(old_s))
    _check_size(len(text) + occurrences * max(0, len(new_s) - len(old_s)))
    return do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def filter_join(eval_ctx, value, d="", attribute=None):
    items = list(value)
    if attribute is None:
        _check_size(
            sum(len(soft_str(i)) for i in items) + len(soft_str(d)) * max(0, len(items) - 1)
        )
    return do_join(eval_ctx, items, d, attribute)


def filter_batch(value, linecount: int, fill_with=None):
    _guard_width(linecount, "batch")
    return do_batch(value, linecount, fill_with)


def filter_slice(value, slices: int, fill_with=None):
    _guard_width(slices, "slice")
    return sync_do_slice(value, slices, fill_with)


def _bounded(func):
    """``func`` (a filter) checking the deadline, then its input and its result with
    :func:`_check_value`: no filter starts late, works on an oversized value or makes one."""
    skip = 0 if _PassArg.from_obj(func) is None else 1  # the context or environment first

    @functools.wraps(func)  # keeps Jinja's pass_context/… marker
    def bounded(*args, **kwargs):
        _check_deadline(_current())
        if len(args) > skip:
            _check_value(args[skip], "A filter's input")
        return _check_value(func(*args, **kwargs), "A filter's result")

    return bounded


def _refused(name: str, hint: str):
    def refuse(*args, **kwargs):
        raise errors.TemplateSecurityError(f"The {name} filter is not available. {hint}")

    return refuse


# Each takes the context only so that Jinja's optimizer never folds a call at compile time, with
# whatever locale compiling ran in, into a template compiled once for every locale.
LOCALE_FILTERS = {
    "date": filter_date,
    "time": filter_time,
    "datetime": filter_datetime,
    "timedelta": filter_timedelta,
    "number": filter_number,
    "currency": filter_currency,
    "percent": filter_percent,
}

# ---------------------------------------------------------------------------------- sandbox

# Methods a template may call on a string: none of them can make the string grow much.
STR_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isascii",
        "isdecimal",
        "isdigit",
        "islower",
        "isnumeric",
        "isspace",
        "istitle",
        "isupper",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rindex",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
    }
)
NUMBER_ATTRIBUTES = frozenset(
    {"real", "imag", "numerator", "denominator", "is_integer", "bit_length", "conjugate"}
)
# Names that mean an injection attempt in a message template (the values they would reach do not
# exist here; refusing them by name gives the author a clear message). A variable may not take
# one of them either (``templates_app.models.RESERVED_VARIABLES``).
INJECTION_NAMES = frozenset({"self", "config", "request", "settings", "lipsum", "cycler", "joiner"})
FORBIDDEN_NAMES = INJECTION_NAMES | {"url_for", "get_flashed_messages"}
FORBIDDEN_ATTRIBUTES = frozenset({"format", "format_map", "mro"})
FORBIDDEN_FILTERS = frozenset({"attr"})


class MissingVariable(jinja_exceptions.UndefinedError):
    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


class NamedStrictUndefined(StrictUndefined):
    """StrictUndefined whose error names what is missing (``MissingVariable.name``)."""

    __slots__ = ()

    def __init__(self, hint=None, obj=missing, name=None, exc=jinja_exceptions.UndefinedError):
        if exc is jinja_exceptions.UndefinedError:
            exc = functools.partial(MissingVariable, name=str(name) if name is not None else "?")
        super().__init__(hint, obj, name, exc)


class GuardedCodeGenerator(CodeGenerator):
    """Compiles ``~`` into a size-checked join, and list, tuple and dict literals into values
    measured once built (``[s, s, s]`` of one large ``s`` is three times its size)."""

    def _measured(self, visit, node, frame) -> None:
        self.write("environment.measured(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame) -> None:  # noqa: N802
        self._measured(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame) -> None:  # noqa: N802
        self._measured(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame) -> None:  # noqa: N802
        if node.ctx == "load":
            self._measured(super().visit_Tuple, node, frame)
        else:  # a loop's or a set's targets
            super().visit_Tuple(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame) -> None:  # noqa: N802
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.autoescape"
        else:
            markup = "True" if frame.eval_ctx.autoescape else "False"
        self.write("environment.guarded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {markup})")


class CappedNamespace(Namespace):
    """``namespace()`` whose attributes cannot hold oversized strings or lists."""

    def __setitem__(self, name, value):
        _check_value(value, "A namespace value")
        super().__setitem__(name, value)


LOOP_GUARD = "_loop_guard"


@pass_context  # also keeps the optimizer from calling it at compile time
def guard_loop(context, iterable):
    """Counts and times every iteration of a ``{% for %}``."""
    state = _current()
    for item in iterable:
        _tick(state)
        yield item


def check_tree(tree: nodes.Template) -> None:
    """Refuses what a message template never needs (see the module docstring)."""

    def refuse(message: str, node: nodes.Node):
        raise errors.TemplateSecurityError(message, line=node.lineno, field=None)

    for node in tree.find_all(
        (
            nodes.Name,
            nodes.Getattr,
            nodes.Getitem,
            nodes.Filter,
            nodes.Test,
            nodes.Const,
            nodes.Import,
            nodes.FromImport,
            nodes.Include,
            nodes.Extends,
        )
    ):
        if isinstance(node, (nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)):
            refuse("imports, includes and extends are not allowed.", node)
        elif isinstance(node, nodes.Name):
            if node.name.startswith("_"):
                refuse("names starting with _ are not allowed.", node)
            if node.name in FORBIDDEN_NAMES and node.ctx == "load":
                refuse(f"{node.name!r} is not available in templates.", node)
        elif isinstance(node, nodes.Getattr):
            if node.attr.startswith("_") or node.attr in FORBIDDEN_ATTRIBUTES:
                refuse(f"the attribute {node.attr!r} is not allowed.", node)
        elif isinstance(node, nodes.Getitem):
            arg = node.arg
            if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                if arg.value.startswith("_") or arg.value in FORBIDDEN_ATTRIBUTES:
                    refuse(f"the key {arg.value!r} is not allowed.", node)
        elif isinstance(node, (nodes.Filter, nodes.Test)):
            if node.name in FORBIDDEN_FILTERS or node.name.startswith("_"):
                refuse(f"the {node.name} filter is not allowed.", node)
        elif isinstance(node, nodes.Const):
            if isinstance(node.value, str) and "__" in node.value:
                refuse("strings containing __ are not allowed.", node)


class Sandbox(ImmutableSandboxedEnvironment):
    """The environment every template renders in; one for HTML (autoescaped), one for text."""

    code_generator_class = GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, autoescape: bool, static_checks: bool = True):
        super().__init__(
            autoescape=autoescape,
            undefined=NamedStrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=_finalize,
            auto_reload=False,
            cache_size=0,
        )
        self.static_checks = static_checks
        for name in ("lipsum", "cycler", "joiner"):
            self.globals.pop(name, None)
        self.globals["range"] = self.safe_range
        self.globals["namespace"] = CappedNamespace
        self.filters.update(LOCALE_FILTERS)
        self.filters.update(
            {
                "center": filter_center,
                "indent": filter_indent,
                "wordwrap": filter_wordwrap,
                "urlize": filter_urlize,
                "title": filter_title,
                "urlencode": filter_urlencode,
                "replace": filter_replace,
                "join": filter_join,
                "batch": filter_batch,
                "slice": filter_slice,
            }
        )
        self.filters = {name: _bounded(f) for name, f in self.filters.items()}
        self.filters[LOOP_GUARD] = guard_loop
        self.filters["attr"] = _refused("attr", "Use dot or bracket access.")
        self.filters["format"] = _refused("format", "Use number, currency, date and friends.")

    # Parsing: static checks, then every loop guarded.
    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        if self.static_checks:
            check_tree(tree)
        # Jinja forbids custom node types: the guard is a filter no author can name (the static
        # check refuses names starting with _), wrapped around every loop's iterable.
        for loop in list(tree.find_all(nodes.For)):
            loop.iter = nodes.Filter(
                loop.iter, LOOP_GUARD, [], [], None, None, lineno=loop.iter.lineno
            )
        return tree

    # Run-time hook called by the generated code.

    def guarded_concat(self, parts, markup: bool):
        for part in parts:
            _check_value(part, "A concatenated value")
        items = [soft_str(p) for p in parts]
        _check_size(sum(map(len, items)), "A concatenated string")
        return markup_join(items) if markup else str_join(items)

    def measured(self, value):
        return _check_value(value)

    def concat(self, parts) -> str:  # Jinja's is "".join
        # What a {% set %} block, a macro or a {% filter %} block buffered: the loop inside may
        # have appended the same large chunk many times.
        items = list(parts)
        _check_size(sum(len(p) for p in items), "A block's output")
        return "".join(items)

    def safe_range(self, *args):
        rng = range(*args)
        limit = _current().limits.max_range
        if len(rng) > limit:
            raise errors.RenderLimitError(f"range() may produce at most {limit} items.")
        return rng

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _check_size(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            raise SecurityError("%-formatting of strings is not allowed; use the filters.")
        return _check_value(self.binop_table[operator](left, right))

    def call(self, context, obj, /, *args, **kwargs):
        state = _current()
        _tick(state)
        if not self.is_safe_callable(obj):
            raise SecurityError(f"{obj!r} is not safely callable")
        return _check_value(context.call(obj, *args, **kwargs), "A call's result")

    def is_safe_attribute(self, obj, attr, value):
        if attr.startswith("_"):
            return False
        if isinstance(obj, str):
            return attr in STR_METHODS
        if isinstance(obj, (int, float)):
            return attr in NUMBER_ATTRIBUTES
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return False
        if attr in FORBIDDEN_ATTRIBUTES:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value):
        # Jinja2 hands templates a sandboxed str.format; ours get none (every past sandbox
        # escape went through string formatting).
        return None

    def getattr(self, obj, attribute):
        # Data is JSON: a key named like a dict method ("items", "values") is what the author
        # means, so dict keys win over dict attributes.
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _finalize(value):
    return "" if value is None else _check_value(value, "An output value")


def _check_product(left, right) -> None:
    limits = _current().limits
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            cap = limits.max_output if isinstance(seq, str) else limits.max_items
            if len(seq) * max(n, 0) > cap:
                raise errors.RenderLimitError(
                    f"Repeating a value {n} times would exceed {cap} characters or items."
                )
            return
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > limits.max_int_bits:
            raise errors.RenderLimitError("The product is too large a number.")


def _check_power(left, right) -> None:
    limits = _current().limits
    if isinstance(left, int) and isinstance(right, int):
        if right > 0 and max(left.bit_length(), 1) * right > limits.max_int_bits:
            raise errors.RenderLimitError("The power is too large a number.")
    elif isinstance(right, (int, float)) and abs(right) > 1_000:
        raise errors.RenderLimitError("The exponent is too large.")


@functools.cache
def environment(*, html: bool, static_checks: bool = True) -> Sandbox:
    return Sandbox(autoescape=html, static_checks=static_checks)


# ---------------------------------------------------------------------------- compile cache


class CompiledCache:
    """Compiled templates by (version, field, source), least recently used evicted.

    Keys include the source, so a draft edited in the admin recompiles and an approved version,
    whose source never changes, hits forever.
    """

    def __init__(self, size: int = 2048):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compile(self, key, source: str, *, html: bool, static_checks: bool = True):
        full_key = (key, html, static_checks, source)
        if key is not None:
            with self._lock:
                template = self._items.get(full_key)
                if template is not None:
                    self._items.move_to_end(full_key)
                    self.hits += 1
                    return template
        self.misses += 1
        template = compile_source(source, html=html, static_checks=static_checks)
        if key is not None:
            with self._lock:
                self._items[full_key] = template
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return template

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
        self.hits = self.misses = 0

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / total if total else 0.0,
            "size": len(self._items),
        }


compiled_cache = CompiledCache()


def compile_source(source: str, *, html: bool, static_checks: bool = True):
    """A compiled template, or TemplateSyntaxError / TemplateSecurityError with the line."""
    env = environment(html=html, static_checks=static_checks)
    try:
        return env.from_string(source)
    except jinja_exceptions.TemplateSyntaxError as exc:
        raise errors.TemplateSyntaxError(exc.message or str(exc), line=exc.lineno) from exc
    except errors.TemplateError:
        raise
    except SecurityError as exc:
        raise errors.TemplateSecurityError(str(exc)) from exc


def check_source(source: str, *, html: bool) -> None:
    """Parses and compiles ``source``: the check a draft passes before it is saved."""
    compile_source(source, html=html)


# ------------------------------------------------------------------------------- rendering


def _template_line(exc: BaseException) -> int | None:
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render_string(template, context: dict, *, field_name: str) -> str:
    """Renders one compiled field inside the current render state, mapping every failure."""
    state = _current()
    try:
        parts = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > state.limits.max_output:
                raise errors.RenderLimitError(
                    f"The output exceeds {state.limits.max_output} characters."
                )
            parts.append(chunk)
        return "".join(parts)
    except errors.TemplateError as exc:
        if exc.field is None:
            raise _placed(exc, field_name, _template_line(exc)) from exc
        raise
    except MissingVariable as exc:
        raise errors.MissingVariableError(
            exc.name,
            f"Missing variable {exc.name!r} ({exc.message}).",
            field=field_name,
            line=_template_line(exc),
        ) from exc
    except SecurityError as exc:
        raise errors.TemplateSecurityError(
            str(exc), field=field_name, line=_template_line(exc)
        ) from exc
    except jinja_exceptions.UndefinedError as exc:
        raise errors.MissingVariableError(
            "?", exc.message or str(exc), field=field_name, line=_template_line(exc)
        ) from exc
    except (jinja_exceptions.TemplateRuntimeError, jinja_exceptions.TemplateAssertionError) as exc:
        raise errors.TemplateSyntaxError(
            str(exc), field=field_name, line=_template_line(exc)
        ) from exc
    except (RecursionError, MemoryError, OverflowError) as exc:
        raise errors.RenderLimitError(
            f"{type(exc).__name__}: {exc}", field=field_name, line=_template_line(exc)
        ) from exc
    except (
        TypeError,
        ValueError,
        ArithmeticError,
        LookupError,
        AttributeError,
        babel.UnknownLocaleError,
    ) as exc:
        raise errors.InvalidVariableError(
            f"{type(exc).__name__}: {exc}", field=field_name, line=_template_line(exc)
        ) from exc


def _placed(exc: errors.TemplateError, field_name: str, line: int | None):
    """The same error, now saying which field and line it came from."""
    message = exc.message
    if isinstance(exc, errors.MissingVariableError):
        return type(exc)(
            exc.variable,
            message,
            variables=exc.variables,
            field=field_name,
            line=exc.line or line,
        )
    return type(exc)(message, field=field_name, line=exc.line or line)


_inliner = css_inline.CSSInliner(
    load_remote_stylesheets=False,  # a template must not make the worker fetch URLs
    keep_at_rules=True,  # @media queries stay in a <style> for the clients that read them
)
_BLOCK = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "aside",
        "nav",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "blockquote",
        "pre",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "center",
        "address",
        "figure",
        "figcaption",
    }
)
_SKIP = frozenset({"head", "style", "script", "title", "template", "noscript"})
_SPACES = re.compile(r"\s+")


def html_to_text(html: str) -> str:
    """The plain-text alternative of an email: blocks on their own lines, ``* `` list items,
    ``[text](url)`` links, table cells side by side; head, style and script dropped.

    One walk over the lxml tree (about 6x faster than a layout engine such as inscriptis, which
    made the text alternative the costliest part of a render).
    """
    try:
        root = lxml_html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        return ""
    out: list[str] = []

    def newline() -> None:
        if out and not out[-1].endswith("\n"):
            out.append("\n")

    def text(value: str | None) -> None:
        if value:
            collapsed = _SPACES.sub(" ", value)
            if out and out[-1].endswith("\n"):
                collapsed = collapsed.lstrip()
            if collapsed:
                out.append(collapsed)

    state = _current()

    def walk(el) -> None:
        _check_deadline(state)  # one walk of up to max_output characters of HTML, in Python
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in _SKIP:
            text(el.tail)
            return
        if tag in _BLOCK:
            newline()
        elif tag == "li":
            newline()
            out.append("* ")
        elif tag == "br":
            out.append("\n")
        elif tag in ("td", "th") and out and not out[-1].endswith(("\n", " ")):
            out.append("  ")
        if tag == "a" and el.get("href", "").startswith(("http:", "https:", "mailto:")):
            label = _SPACES.sub(" ", el.text_content()).strip()
            href = el.get("href")
            out.append(f"[{label}]({href})" if label and label != href else href)
        elif tag == "img":
            if el.get("alt"):
                text(el.get("alt"))
        else:
            text(el.text)
            for child in el:
                walk(child)
        if tag in _BLOCK or tag == "li":
            newline()
        text(el.tail)

    body = root.find("body")
    walk(body if body is not None else root)
    lines = [line.strip() for line in "".join(out).splitlines()]
    kept: list[str] = []
    for line in lines:
        if line or (kept and kept[-1]):
            kept.append(line)
    return "\n".join(kept).strip() + "\n"


@dataclass
class Rendered:
    """What a render produced: the fields of the channel, SMS figures, and warnings."""

    channel: str
    fields: dict = field(default_factory=dict)
    sms: dict | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = dict(self.fields)
        if self.sms is not None:
            out["sms"] = self.sms
        out["warnings"] = list(self.warnings)
        return out


URL_FIELDS = frozenset({"image", "deep_link", "action_url"})
# A link a client opens on a tap: data from a caller must not turn it into script.
UNSAFE_SCHEMES = frozenset({"javascript", "vbscript", "data", "file"})


def _checked_url(name: str, value: str) -> str:
    scheme = value.split(":", 1)[0].strip().lower() if ":" in value else ""
    # Browsers ignore control characters and whitespace inside a scheme ("java\tscript:").
    scheme = "".join(ch for ch in scheme if ch.isprintable() and not ch.isspace())
    if scheme in UNSAFE_SCHEMES:
        raise errors.TemplateSecurityError(
            f"The rendered URL uses the {scheme}: scheme, which is not allowed.", field=name
        )
    return value


def _finish_email(result: Rendered) -> None:
    html = result.fields.get("html", "")
    if not result.fields.get("text"):
        # From the HTML before inlining: the same text, without the style attributes.
        result.fields["text"] = html_to_text(html) if html else ""
    if html:
        result.fields["html"] = _inliner.inline(html)
    result.fields.setdefault("subject", "")


def _finish_sms(result: Rendered, maximum: int, *, enforce: bool) -> None:
    text = normalize(result.fields.get("text", ""))
    result.fields["text"] = text
    result.sms = sms_info(text)
    if result.sms["encoding"] != "GSM-7":
        chars = "".join(non_gsm7(text)[:10])
        result.warnings.append(
            f"The text contains characters outside GSM-7 ({chars}); it is sent as "
            f"UCS-2, {result.sms['segments']} segment(s)."
        )
    if result.sms["segments"] > maximum:
        message = f"The SMS takes {result.sms['segments']} segments; at most {maximum}."
        if enforce:
            raise errors.RenderLimitError(message, field="text")
        result.warnings.append(message)


def render_fields(**kwargs) -> Rendered:
    """Renders the ``sources`` of one channel with ``context`` (see :func:`_render_fields` for
    the arguments) on the render executor, waiting for it at most its time limit.

    Raises the TemplateError subclasses, RenderLimitError when the render overran its time
    limit, RenderBusyError (503) when the executor has no room.
    """
    limits = kwargs.pop("limits", None) or Limits.from_settings()
    return executor.run(_render_fields, limits.time_limit, limits=limits, **kwargs)


def _render_fields(
    *,
    channel: str,
    sources: dict,
    context: dict,
    locale: str = "en",
    timezone: str = "",
    cache_key=None,
    sms_max_segments: int | None = None,
    enforce_sms_limit: bool = False,
    limits: Limits | None = None,
    static_checks: bool = True,
) -> Rendered:
    """Renders the ``sources`` of one channel with ``context``.

    Email HTML gets its CSS inlined and, when no text body is given, a text alternative made from
    it; subjects and titles lose line breaks (a header must stay one line). For SMS the result
    carries encoding and segments; more segments than allowed is a warning, or with
    ``enforce_sms_limit`` (real sends) a RenderLimitError. Raises the TemplateError subclasses.
    """
    limits = limits or Limits.from_settings()
    state = RenderState(limits, locale_for(locale or "en"), tzinfo_for(timezone or ""))
    token = _state.set(state)
    try:
        result = Rendered(channel=channel)

        def render(name: str, source: str, *, html: bool = False) -> str:
            try:
                template = compiled_cache.get_or_compile(
                    (cache_key or "draft", name), source, html=html, static_checks=static_checks
                )
            except errors.TemplateError as exc:
                raise _placed(exc, name, exc.line) from exc
            return render_string(template, context, field_name=name)

        for name, source in sources.items():
            if name == "data":
                if source:
                    result.fields["data"] = {
                        k: render(f"data.{k}", v) if isinstance(v, str) else v
                        for k, v in source.items()
                    }
                else:
                    result.fields["data"] = {}
                continue
            if not source:
                continue
            html = channel == "email" and name == "html"
            value = render(name, source, html=html)
            if name in ("subject", "title"):
                value = " ".join(value.split())
            elif name in URL_FIELDS:
                value = _checked_url(name, value.strip())
            result.fields[name] = value

        if channel == "email":
            _finish_email(result)
        elif channel == "sms":
            maximum = sms_max_segments or limits.sms_max_segments
            _finish_sms(result, maximum, enforce=enforce_sms_limit)
        else:
            for name in ("title", "body"):
                if name in sources or channel != "chat":
                    result.fields.setdefault(name, "")
        return result
    finally:
        _state.reset(token)


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


def stats() -> dict:
    return {"compiled": compiled_cache.stats(), "executor": executor.stats()}


__all__ = [
    "Limits",
    "Markup",
    "Rendered",
    "Sandbox",
    "Undefined",
    "check_source",
    "compile_source",
    "environment",
    "language_chain",
    "locale_for",
    "render_fields",
]
