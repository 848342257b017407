"""The development outbox: what a channel with no configured provider "sent", read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils.html import format_html
from unfold.decorators import display

from communication import content_access
from notifications import selectors
from notifications.admin.common import ReadOnlyAdmin, cut, pairs, timeline_link, when
from notifications.models import OutboxMessage


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("created", "channel", "to", "headline", "delivery_link")
    list_select_related = ("delivery",)
    list_filter = ("channel",)
    search_fields = ("to_hash",)  # shows the box; the search is get_search_results
    search_help_text = "Exact recipient address"
    sortable_by = ()
    ordering = ("-created_at",)
    fieldsets = (
        (None, {"fields": ("channel", "to", "subject", "created_at", "delivery_link")}),
        ("Content", {"fields": ("text_view", "rendered_html", "payload_view")}),
    )
    readonly_fields = (
        "channel",
        "to",
        "subject",
        "created_at",
        "delivery_link",
        "text_view",
        "rendered_html",
        "payload_view",
    )

    def get_search_results(self, request, queryset, search_term):
        # The address is encrypted: an exact match, by its keyed hash.
        if not search_term.strip():
            return queryset, False
        return queryset.filter(selectors.outbox_to(search_term)), False

    def render_change_form(self, request, context, *args: Any, **kwargs: Any):
        obj = context.get("original")
        if obj is not None:  # what was "sent": the rendered subject, text and HTML
            if obj.delivery_id is not None:
                kind, key = "notifications.notification", obj.delivery.notification_id
            else:
                kind, key = "notifications.outboxmessage", obj.pk
            content_access.access_record(
                content_access.NOTIFICATION_CONTENT_VIEWED,
                kind,
                key,
                details={"view": "outbox", "outbox_message": str(obj.pk)},
            )
        return super().render_change_form(request, context, *args, **kwargs)

    @display(description="created")
    def created(self, obj: OutboxMessage) -> str:
        return when(obj.created_at)

    @display(description="subject or text")
    def headline(self, obj: OutboxMessage) -> str:
        return cut(obj.subject or obj.text, 70)

    @display(description="delivery")
    def delivery_link(self, obj: OutboxMessage) -> str:
        if obj.delivery is None:
            return "—"
        return timeline_link(obj.delivery.notification_id, obj.delivery_id)

    @display(description="text")
    def text_view(self, obj: OutboxMessage) -> str:
        if not obj.text:
            return "—"
        return format_html('<div class="whitespace-pre-line break-words">{}</div>', obj.text)

    @display(description="HTML")
    def rendered_html(self, obj: OutboxMessage) -> str:
        if not obj.html:
            return "—"
        # Shown in a sandboxed frame: a template's HTML must not run in the admin's origin.
        return format_html(
            '<iframe sandbox srcdoc="{}" title="HTML body" style="width:100%;height:400px;'
            'border:1px solid #ccc;background:#fff"></iframe>',
            obj.html,
        )

    @display(description="also sent")
    def payload_view(self, obj: OutboxMessage) -> str:
        return pairs({k: v for k, v in (obj.payload or {}).items() if v}, "—")
