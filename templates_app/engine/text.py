"""The plain-text alternative of an email, made from its HTML."""

from __future__ import annotations

import re

from lxml import etree
from lxml import html as lxml_html

from templates_app.engine.limits import _check_deadline, _current

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
