"""The filters templates call: locale-aware dates, times, timedeltas, numbers, currencies and
percentages, and Jinja's size-amplifying builtins with their arguments checked first."""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal

import babel
import babel.dates
import babel.numbers
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
from jinja2.utils import _PassArg, pass_context, pass_environment, pass_eval_context
from markupsafe import soft_str

from templates_app import errors
from templates_app.engine.limits import (
    _check_deadline,
    _check_size,
    _check_value,
    _check_words,
    _current,
)


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
