"""One tagged copy of a group of rendered messages, and each recipient's substitutions: what a
batch call (SendGrid ``personalizations`` with ``substitutions``) sends.

The tagged copy is derived from the recipients' own renders, not from the template: the first
message of the group, with the regions where the others differ from it replaced by tags
(``@@s0@@``, ``@@s1@@`` …). Those regions are found by a word-level diff of the first message
against a few others (the first that do not fit yet). A recipient's substitutions are then read
by matching its own subject, text and HTML against the tagged copy (a full regular-expression
match, each tag a group): a match reconstructs its text exactly, so the batch call delivers to
each recipient what a call of its own would, byte for byte — variables, escaping, per-recipient
tracked links and unsubscribe URLs included.

A batch carries a recipient only when its render differs from the first one's in its variables
alone: its subject, text and HTML with its own ``Message.variables`` taken out must be the first
recipient's with the first recipient's variables taken out. A recipient whose
render differs otherwise (another branch of an ``{% if %}``, another variant) or does not match
is sent alone.

Rendering once with tags in place of the variables would miss what varies outside them (the
signed tracking links, filters applied to a value, HTML escaping); deriving the tags from the
renders needs no knowledge of the template and cannot send a recipient the wrong text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from notifications.providers.base import Message

FIELDS = ("subject", "text", "html")
_TAG = "@@s{}@@"
_TAG_LIKE = re.compile(r"@@s\d+@@")
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]", re.UNICODE)
# Literals shorter than this between two tags are folded into one tag: short literals make the
# match backtrack, and cost little as substitution bytes.
_MIN_LITERAL = 8
# How many recipients that do not fit may refine the tags before the rest are matched as is.
_REFINEMENTS = 8


@dataclass
class Merged:
    """``template``: each field of the tagged copy; ``substitutions``: per message, its tag →
    value, or None when it must be sent alone."""

    template: dict[str, str]
    substitutions: list[dict[str, str] | None]


def _shape(message: Message) -> tuple[object, ...]:
    """What must be equal for two messages to share a call (everything that is not text)."""
    return (
        message.channel,
        message.from_email,
        message.category,
        tuple(message.tags),
        tuple(sorted(message.headers)),
        bool(message.text),
        bool(message.html),
    )


def _diff_spans(reference: str, other: str) -> list[tuple[int, int]]:
    """Character spans of ``reference`` that differ from ``other`` (word granularity)."""
    a, b = _TOKEN.findall(reference), _TOKEN.findall(other)
    offsets = [0]
    for token in a:
        offsets.append(offsets[-1] + len(token))
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    return [
        (offsets[i1], offsets[i2]) for op, i1, i2, _, _ in matcher.get_opcodes() if op != "equal"
    ]


def _fold(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    folded: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if folded and start - folded[-1][1] < _MIN_LITERAL:
            folded[-1] = (folded[-1][0], max(end, folded[-1][1]))
        else:
            folded.append((start, end))
    return folded


class _Field:
    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.spans: list[tuple[int, int]] = []
        self.pattern = re.compile(re.escape(reference), re.DOTALL)

    def refine(self, other: str) -> None:
        self.spans = _fold(self.spans + _diff_spans(self.reference, other))
        parts, last = [], 0
        for start, end in self.spans:
            parts.append(re.escape(self.reference[last:start]))
            parts.append("(.*?)")
            last = end
        parts.append(re.escape(self.reference[last:]))
        self.pattern = re.compile("".join(parts), re.DOTALL)

    def template(self, first_tag: int) -> str:
        parts, last = [], 0
        for n, (start, end) in enumerate(self.spans):
            parts.append(self.reference[last:start])
            parts.append(_TAG.format(first_tag + n))
            last = end
        parts.append(self.reference[last:])
        return "".join(parts)


def merge(messages: Sequence[Message], *, max_bytes: int = 0) -> Merged:
    """The tagged copy of ``messages`` and each one's substitutions (see the module's docstring).

    ``max_bytes``: the vendor's cap on one recipient's substitutions (0: none); a recipient past
    it is sent alone. Substitution is one pass over the tags (a value is never searched for
    tags): a text that holds something shaped like a tag is never merged.
    """
    reference = messages[0]
    none: list[dict[str, str] | None] = [None] * len(messages)
    if any(_TAG_LIKE.search(getattr(reference, f)) for f in FIELDS):
        return Merged({f: getattr(reference, f) for f in FIELDS}, none)
    fields = {f: _Field(getattr(reference, f)) for f in FIELDS}
    shape = _shape(reference)

    def fits(message: Message) -> bool:
        return all(fields[f].pattern.fullmatch(getattr(message, f)) for f in FIELDS)

    refinements = 0
    for message in messages[1:]:
        if refinements >= _REFINEMENTS:
            break
        if _shape(message) == shape and not fits(message):
            refinements += 1
            for f in FIELDS:
                if getattr(message, f) != fields[f].reference:
                    fields[f].refine(getattr(message, f))

    template, first = {}, 0
    for f in FIELDS:
        template[f] = fields[f].template(first)
        first += len(fields[f].spans)
    if sum(len(_TAG_LIKE.findall(t)) for t in template.values()) != first:
        # A literal next to a tag reads as another tag: no batch for this group.
        return Merged(template, none)

    strip = _stripper(reference.variables)
    reference_rest = {f: strip(getattr(reference, f)) for f in FIELDS}

    substitutions: list[dict[str, str] | None] = []
    for message in messages:
        values: dict[str, str] | None = {} if _shape(message) == shape else None
        first = 0
        for f in FIELDS:
            if values is None:
                break
            found = fields[f].pattern.fullmatch(getattr(message, f))
            if found is None or any("@@" in g for g in found.groups()):
                values = None
                break
            for n, value in enumerate(found.groups()):
                values[_TAG.format(first + n)] = value
            first += len(fields[f].spans)
        if values is not None and message is not reference:
            strip = _stripper(message.variables)
            if not all(
                getattr(message, f) == fields[f].reference
                or strip(getattr(message, f)) == reference_rest[f]
                for f in FIELDS
            ):
                values = None  # differs beyond its variables
        if values is not None and max_bytes:
            size = sum(len(k.encode()) + len(v.encode()) for k, v in values.items())
            if size > max_bytes:
                values = None
        substitutions.append(values)
    return Merged(template, substitutions)


def _stripper(variables: Sequence[str]) -> Callable[[str], str]:
    """A function taking every occurrence of ``variables`` (longest first) out of a text."""
    if not variables:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(v) for v in sorted(variables, key=len, reverse=True)))
    return lambda text: pattern.sub("", text)


def substitute(text: str, values: dict[str, str]) -> str:
    """``text`` with its tags replaced by ``values`` in one pass (how the vendor applies them;
    the tests' and the bench's fake providers use it)."""
    return _TAG_LIKE.sub(lambda m: values.get(m.group(0), m.group(0)), text)
