"""The sandboxed environment: the static check of a parsed template, the allow-lists of names,
attributes and methods, and the intercepted operators, calls, literals and loops that keep each
step of a render within the caps."""

from __future__ import annotations

import functools

from jinja2 import exceptions as jinja_exceptions
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.runtime import StrictUndefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace, missing, pass_context
from markupsafe import soft_str

from templates_app import errors
from templates_app.engine.filters import (
    LOCALE_FILTERS,
    _bounded,
    _refused,
    filter_batch,
    filter_center,
    filter_indent,
    filter_join,
    filter_replace,
    filter_slice,
    filter_title,
    filter_urlencode,
    filter_urlize,
    filter_wordwrap,
)
from templates_app.engine.limits import _check_size, _check_value, _current, _tick

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
