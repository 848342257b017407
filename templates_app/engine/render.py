"""Compiling (with the in-process cache), rendering one field with every failure mapped to a
TemplateError, and rendering a channel's fields on the render executor."""

from __future__ import annotations

import threading
from collections import OrderedDict

import babel
from jinja2 import exceptions as jinja_exceptions
from jinja2.sandbox import SecurityError

from templates_app import errors, executor
from templates_app.engine.channels import (
    URL_FIELDS,
    Rendered,
    _checked_url,
    _finish_email,
    _finish_sms,
)
from templates_app.engine.limits import Limits, RenderState, _current, _state
from templates_app.engine.locales import locale_for, tzinfo_for
from templates_app.engine.sandbox import MissingVariable, environment


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


def stats() -> dict:
    return {"compiled": compiled_cache.stats(), "executor": executor.stats()}
