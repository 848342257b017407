"""The staff console's home page (unfold's ``DASHBOARD_CALLBACK``): a column of panels that the
apps contribute.

The core imports no other app, so the page does not know what it shows: each app registers its
panels when it loads (``@console.panel(...)`` on a function of the request returning the panel
template's context), and the page renders those the staff member may see, in ``order``. A panel
reads through its app's selectors, so that a faster source (the analytics rollups) replaces a
panel's queries without touching the page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

PanelContext = Callable[[HttpRequest], dict[str, Any]]
# How much of a row a panel takes on a wide screen; narrow screens stack every panel.
Width = Literal["full", "half", "third", "two_thirds"]

# The page's title, and the template that renders the panels (admin.site.index_template).
TITLE = "Dashboard"
INDEX_TEMPLATE = "admin/console/index.html"
# The ready-made panel template: ``table(...)``'s rows in unfold's table, or its empty message.
TABLE_TEMPLATE = "admin/console/panel_table.html"


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    template: str
    order: int
    context: PanelContext
    width: Width = "half"
    # A permission the staff member needs to see the panel (``app_label.codename``).
    permission: str | None = None
    # The page the panel summarises, linked from its title ("Provider health →").
    link: Callable[[], str] | None = None
    link_text: str = ""


_panels: dict[str, Panel] = {}


def panel(
    *,
    key: str,
    title: str,
    order: int,
    template: str = TABLE_TEMPLATE,
    width: Width = "half",
    permission: str | None = None,
    link: Callable[[], str] | None = None,
    link_text: str = "",
) -> Callable[[PanelContext], PanelContext]:
    """Registers the decorated function as a dashboard panel.

    The function takes the request and returns the context of ``template`` (for the table
    template, what ``table(...)`` returns; any template may add a ``footer`` line). Registering a key again replaces the panel, so that a module
    imported twice, or an app that swaps another's panel, leaves one.
    """

    def register(fn: PanelContext) -> PanelContext:
        _panels[key] = Panel(
            key=key,
            title=title,
            template=template,
            order=order,
            context=fn,
            width=width,
            permission=permission,
            link=link,
            link_text=link_text,
        )
        return fn

    return register


def panels() -> list[Panel]:
    return sorted(_panels.values(), key=lambda p: (p.order, p.key))


def visible_panels(request: HttpRequest) -> list[Panel]:
    user = request.user
    return [p for p in panels() if p.permission is None or user.has_perm(p.permission)]


def dashboard(request: HttpRequest, context: dict[str, Any]) -> dict[str, Any]:
    """unfold's ``DASHBOARD_CALLBACK``: adds each visible panel's rendered context."""
    rendered = []
    for item in visible_panels(request):
        rendered.append(
            {
                "key": item.key,
                "title": item.title,
                "template": item.template,
                "width": item.width,
                "link": item.link() if item.link else "",
                "link_text": item.link_text,
                "data": item.context(request),
            }
        )
    context.update({"title": TITLE, "panels": rendered})
    return context


# ---------------------------------------------------------------------------- table panels

# unfold's label colours (unfold/helpers/label.html), for a cell shown as a badge.
BADGES = {
    "success": "bg-green-100 text-green-700 dark:bg-green-500/20 dark:text-green-400",
    "warning": "bg-orange-100 text-orange-700 dark:bg-orange-500/20 dark:text-orange-400",
    "danger": "bg-red-100 text-red-700 dark:bg-red-500/20 dark:text-red-400",
    "info": "bg-blue-100 text-blue-700 dark:bg-blue-500/20 dark:text-blue-400",
}
TONES = {"danger": "text-red-600 dark:text-red-400", "muted": "text-base-500 dark:text-base-400"}


def cell(
    text: object,
    *,
    href: str = "",
    title: str = "",
    badge: str = "",
    tone: str = "",
    strong: bool = False,
    truncate: bool = False,
) -> SafeString:
    """One cell of a table panel: text, a link or a badge (``success``, ``warning``,
    ``danger``, ``info``); ``tone`` ``danger`` or ``muted`` colours the text; ``truncate`` keeps
    a long text on one line (the whole of it in the tooltip)."""
    classes = []
    if badge:
        classes += [
            "inline-block font-semibold h-6 leading-6 px-2 rounded-default text-[11px] uppercase",
            "whitespace-nowrap",
            BADGES[badge],
        ]
    if tone:
        classes.append(TONES[tone])
    if strong:
        classes.append("font-semibold text-font-important-light dark:text-font-important-dark")
    if truncate:
        classes.append("console-truncate")
        title = title or str(text)
    if href:
        classes.append("text-primary-600 dark:text-primary-500")
        return format_html(
            '<a href="{}" class="{}" title="{}">{}</a>', href, " ".join(classes), title, text
        )
    return format_html('<span class="{}" title="{}">{}</span>', " ".join(classes), title, text)


def table(
    headers: list[str], rows: list[list[SafeString | str]], *, empty: str, footer: str = ""
) -> dict[str, Any]:
    """The context of ``TABLE_TEMPLATE``: ``empty`` is the sentence shown when there are no
    rows (a panel never shows an empty table); ``footer`` a line under it ("and 12 more")."""
    return {"headers": headers, "rows": rows, "empty": empty, "footer": footer}


def age(moment: dt.datetime, now: dt.datetime | None = None) -> str:
    """How long ago (or, for a moment ahead, how long until) ``moment``, in its largest unit:
    "3 hours", "less than a minute"."""
    now = now or timezone.now()
    earlier, later = sorted((moment, now))
    if later - earlier < dt.timedelta(minutes=1):
        return "less than a minute"
    return timesince(earlier, later, depth=1)
