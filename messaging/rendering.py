"""The Markdown subset messages are written in, rendered to HTML that nh3 then sanitises.

Raw HTML in the source is never passed through (markdown-it's ``html`` option is off, so ``<script>``
comes out as text); nh3 is the second line: only the tags below survive, links keep http(s) and
mailto schemes only and get ``rel="noopener noreferrer nofollow"``.
"""

from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt

# Inline: emphasis, strong, strikethrough, code spans, links, autolinks, hard breaks.
# Blocks: paragraphs, lists, block quotes, fenced and indented code. No images, headings or tables.
_md = MarkdownIt("zero", {"html": False, "breaks": True, "linkify": False}).enable(
    [
        "emphasis",
        "strikethrough",
        "backticks",
        "link",
        "autolink",
        "escape",
        "entity",
        "newline",
        "list",
        "blockquote",
        "fence",
        "code",
    ]
)

ALLOWED_TAGS = {
    "p",
    "br",
    "em",
    "strong",
    "s",
    "code",
    "pre",
    "a",
    "ul",
    "ol",
    "li",
    "blockquote",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}


# Text that Markdown leaves as it is: starting with a letter (no list, quote, code or fence can
# open), no line break, none of the characters that open inline markup, entities or HTML, and
# nothing the sanitiser would rewrite (no-break space, control and format characters).
_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9 ,.!?'():;/%=@$+\-\x80-\U0010ffff]")


def _plain(content: str) -> bool:
    if not content[0].isalpha() or content[-1] == " " or _UNSAFE_ASCII.search(content):
        return False
    return content.isascii() or all(
        ch.isprintable() and not ch.isspace() for ch in content if ch >= "\x80"
    )


def render(content: str) -> str:
    """Sanitised HTML for the Markdown ``content``."""
    if not content:
        return ""
    if _plain(content):  # most chat messages: the same paragraph, without parsing it
        return f"<p>{content}</p>"
    return _full(content)


def _full(content: str) -> str:
    html = _md.render(content)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    ).strip()


def preview(content: str, length: int = 120) -> str:
    """A one-line plain-text preview (conversation lists, notifications)."""
    text = " ".join(content.split())
    return text if len(text) <= length else text[: length - 1] + "…"
