"""What the Notifications pages share: status colours, list filters that stay on indexes, the
read-only base for pages of record, and how stored values are shown to a person (JSON as labelled
lines, times short and local, long text cut with the whole of it on hover)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from unfold.admin import ModelAdmin
from unfold.contrib.filters.admin import RangeDateFilter
from unfold.paginator import InfinitePaginator
from unfold.utils import parse_date_str

from notifications import selectors

# Colours of unfold's labels for a delivery's status and an event's type.
STATUS_COLOURS = {
    "scheduled": "info",
    "held": "info",
    "queued": "info",
    "sending": "warning",
    "sent": "success",
    "delivered": "success",
    "opened": "success",
    "clicked": "success",
    "failed": "danger",
    "bounced": "danger",
    "complained": "danger",
    "ambiguous": "warning",
    "retry": "warning",
    "failover": "warning",
    "suppressed": "warning",
    "unsubscribed": "warning",
    "resent": "primary",
}

# The sidebar's icons for the pages, reused on the pages' own links.
TIMELINE_ICON = "timeline"


def timeline_url(notification_id: Any, delivery_id: Any = None) -> str:
    url = reverse("admin:notifications_notification_timeline", args=[notification_id])
    return f"{url}#delivery-{delivery_id}" if delivery_id else url


def timeline_link(notification_id: Any, delivery_id: Any = None, text: str = "Timeline") -> str:
    return format_html(
        '<a class="text-primary-600 dark:text-primary-500 whitespace-nowrap" href="{}">{}</a>',
        timeline_url(notification_id, delivery_id),
        text,
    )


class ConsoleAdmin(ModelAdmin):
    """A list titled for people, paged without counting its rows (big tables)."""

    paginator = InfinitePaginator
    show_full_result_count = False
    # Counting every filter choice scans the table: not offered.
    show_facets = admin.ShowFacets.NEVER
    # The list's heading (Django's "Select … to view" otherwise).
    list_title = ""

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        title = self.list_title or str(self.model._meta.verbose_name_plural).capitalize()
        return super().changelist_view(request, {"title": title, **(extra_context or {})})


class ReadOnlyAdmin(ConsoleAdmin):
    """A page of record: staff read it and act through buttons that call services; nothing is
    added, edited or deleted by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CreatedFilter(RangeDateFilter):
    """Created between two dates (inclusive), filtered on the time-ordered primary key rather
    than ``created_at``, which has no index on these tables (``selectors.uuid7_floor``)."""

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        start = self.used_parameters.get(f"{self.parameter_name}_from")
        end = self.used_parameters.get(f"{self.parameter_name}_to")
        try:
            if start:
                queryset = queryset.filter(pk__gte=selectors.uuid7_floor(_midnight(start)))
            if end:
                after = _midnight(end) + dt.timedelta(days=1)
                queryset = queryset.filter(pk__lt=selectors.uuid7_floor(after))
        except ValueError:
            return None
        return queryset


def _midnight(value: str) -> dt.datetime:
    day = parse_date_str(value)  # the date widget's formats (DATE_INPUT_FORMATS)
    if day is None:
        raise ValueError(value)
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


class ProviderFilter(admin.SimpleListFilter):
    """The configured providers and the outbox, from settings: the default filter would read
    every distinct value of a big table."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        aliases = sorted({*settings.NOTIFICATION_PROVIDERS, "outbox"})
        return [(alias, alias) for alias in aliases]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(provider=self.value()) if self.value() else queryset


def when(value: dt.datetime | None) -> SafeString | str:
    if value is None:
        return "—"
    text = timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")
    return format_html('<span class="whitespace-nowrap">{}</span>', text)


def cut(text: str, limit: int = 80) -> SafeString | str:
    """``text`` up to ``limit`` characters, the whole of it in a tooltip."""
    if not text:
        return "—"
    if len(text) <= limit:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: limit - 1])


def pairs(mapping: Any, empty: str = "—") -> SafeString | str:
    """A JSON object as one "name: value" line per key, nested objects indented below their
    name: what a payload, a request's content or data says, without braces and quotes."""
    if not mapping:
        return empty
    if not isinstance(mapping, dict):
        return _flat(mapping)
    return format_html(
        # Inline styles: the theme's stylesheet has no utility for breaking long values.
        '<dl class="flex flex-col gap-1" style="min-width:0">{}</dl>',
        format_html_join(
            "",
            '<div class="flex gap-2" style="min-width:0"><dt class="font-medium text-important '
            'shrink-0">{}</dt><dd style="overflow-wrap:anywhere;white-space:pre-line;'
            'min-width:0">{}</dd></div>',
            (
                (f"{key}:", pairs(value) if isinstance(value, dict) else _flat(value))
                for key, value in mapping.items()
            ),
        ),
    )


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value) or "—"
    if value is None or value == "":
        return "—"
    return str(value)
