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

The package, by what each module holds (each imports only the ones before it):

- :mod:`.locales`: Babel locales, time zones, the language fallback chain.
- :mod:`.limits`: the caps (:class:`Limits`), the per-render budget and its checks.
- :mod:`.filters`: the locale-aware filters and the size-checked builtins.
- :mod:`.sandbox`: the static check, the sandboxed environment and its intercepted operators.
- :mod:`.text`: the plain-text alternative of an email's HTML.
- :mod:`.channels`: the per-channel result and its finishing (email, SMS, URLs).
- :mod:`.render`: the compile cache, rendering fields, and the executor hand-off.
"""

from __future__ import annotations

from jinja2 import Undefined
from markupsafe import Markup

from templates_app.engine.channels import UNSAFE_SCHEMES, URL_FIELDS, Rendered
from templates_app.engine.filters import LOCALE_FILTERS
from templates_app.engine.limits import Limits, RenderState, _state
from templates_app.engine.locales import language_chain, locale_for, tzinfo_for
from templates_app.engine.render import (
    CompiledCache,
    check_source,
    compile_source,
    compiled_cache,
    render_fields,
    render_string,
    stats,
)
from templates_app.engine.sandbox import (
    FORBIDDEN_ATTRIBUTES,
    FORBIDDEN_FILTERS,
    FORBIDDEN_NAMES,
    INJECTION_NAMES,
    LOOP_GUARD,
    NUMBER_ATTRIBUTES,
    STR_METHODS,
    CappedNamespace,
    GuardedCodeGenerator,
    MissingVariable,
    NamedStrictUndefined,
    Sandbox,
    check_tree,
    environment,
    guard_loop,
)
from templates_app.engine.text import html_to_text

__all__ = [
    "FORBIDDEN_ATTRIBUTES",
    "FORBIDDEN_FILTERS",
    "FORBIDDEN_NAMES",
    "INJECTION_NAMES",
    "LOCALE_FILTERS",
    "LOOP_GUARD",
    "NUMBER_ATTRIBUTES",
    "STR_METHODS",
    "UNSAFE_SCHEMES",
    "URL_FIELDS",
    "CappedNamespace",
    "CompiledCache",
    "GuardedCodeGenerator",
    "Limits",
    "Markup",
    "MissingVariable",
    "NamedStrictUndefined",
    "RenderState",
    "Rendered",
    "Sandbox",
    "Undefined",
    "_state",
    "check_source",
    "check_tree",
    "compile_source",
    "compiled_cache",
    "environment",
    "guard_loop",
    "html_to_text",
    "language_chain",
    "locale_for",
    "render_fields",
    "render_string",
    "stats",
    "tzinfo_for",
]
