"""The delivery log: requests, notifications and deliveries, read-only, searched by exact
values on indexed columns (an address, a user id, an id, an idempotency key), each leading to
its notification's timeline. Cancel and resend are buttons there and on the delivery's page."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from unfold.admin import TabularInline
from unfold.decorators import display

from communication import content_access
from notifications import console, selectors, services
from notifications.admin import send_test, timeline
from notifications.admin.common import (
    STATUS_COLOURS,
    CreatedFilter,
    ProviderFilter,
    ReadOnlyAdmin,
    cut,
    pairs,
    timeline_link,
    when,
)
from notifications.models import Delivery, Notification, NotificationRequest

SEARCH_HELP = "Exact address, user id, request or delivery id, idempotency key"


def _actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


def _recipient(notification: Notification, delivery: Delivery | None = None) -> str:
    if delivery is not None and delivery.address:
        return delivery.address
    if notification.user is not None:
        return f"user {notification.user.external_id or notification.user.get_username()}"
    return notification.email or notification.phone or "—"


# ------------------------------------------------------------------------------------ requests


@admin.register(NotificationRequest)
class NotificationRequestAdmin(ReadOnlyAdmin):
    list_display = (
        "created",
        "caller",
        "category_key",
        "what",
        "priority",
        "scheduled_at",
        "cancelled_at",
        "resend_of",
    )
    list_select_related = ("resent_from",)
    list_filter = (
        "category",
        "priority",
        ("created_at", CreatedFilter),
        ("cancelled_at", admin.EmptyFieldListFilter),
        ("resent_from", admin.EmptyFieldListFilter),
    )
    list_filter_submit = True
    search_fields = ("caller",)  # shows the box; the search itself is get_search_results
    search_help_text = "Exact request id, caller or idempotency key"
    sortable_by = ()
    ordering = ("-id",)
    fieldsets = (
        (None, {"fields": ("id", "caller", "idempotency_key", "category", "priority")}),
        (
            "What",
            {"fields": ("template_key", "content_view", "data_view", "locale", "channels_view")},
        ),
        ("When", {"fields": ("created_at", "scheduled_at", "scheduled_local", "cancelled_at")}),
        ("Recipients", {"fields": ("recipients", "resend_of")}),
    )
    readonly_fields = (
        "id",
        "caller",
        "idempotency_key",
        "category",
        "priority",
        "template_key",
        "content_view",
        "data_view",
        "locale",
        "channels_view",
        "created_at",
        "scheduled_at",
        "scheduled_local",
        "cancelled_at",
        "recipients",
        "resend_of",
    )

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(selectors.request_log_search(search_term)), False

    def render_change_form(self, request, context, *args: Any, **kwargs: Any):
        obj = context.get("original")
        if obj is not None:  # the caller's inline content and data, as sent
            content_access.access_record(
                content_access.NOTIFICATION_CONTENT_VIEWED,
                "notifications.notificationrequest",
                obj.pk,
                details={"view": "request"},
            )
        return super().render_change_form(request, context, *args, **kwargs)

    @display(description="created")
    def created(self, obj: NotificationRequest) -> str:
        return when(obj.created_at)

    @display(description="category")
    def category_key(self, obj: NotificationRequest) -> str:
        return obj.category_id

    @display(description="template or content")
    def what(self, obj: NotificationRequest) -> str:
        if obj.template_key:
            return obj.template_key
        return cut(str(obj.content.get("subject") or obj.content.get("title") or "inline"), 40)

    @display(description="resend of")
    def resend_of(self, obj: NotificationRequest) -> str:
        if obj.resent_from is None:
            return "—"
        return timeline_link(obj.resent_from.notification_id, obj.resent_from_id, "original")

    @display(description="content")
    def content_view(self, obj: NotificationRequest) -> str:
        return pairs(obj.content, "— (a template)")

    @display(description="data")
    def data_view(self, obj: NotificationRequest) -> str:
        return pairs(obj.data)

    @display(description="channels")
    def channels_view(self, obj: NotificationRequest) -> str:
        return ", ".join(obj.channels) or "—"

    @display(description="recipients")
    def recipients(self, obj: NotificationRequest) -> str:
        shown = 20
        notifications = selectors.request_recipients(obj.id, limit=shown + 1)
        lines = format_html_join(
            "",
            "<li>{} · {}</li>",
            ((_recipient(n), timeline_link(n.id)) for n in notifications[:shown]),
        )
        more = ""
        if len(notifications) > shown:
            url = reverse("admin:notifications_notification_changelist")
            more = format_html('<li><a href="{}?q={}">All of them…</a></li>', url, obj.id)
        return format_html('<ul class="flex flex-col gap-1">{}{}</ul>', lines, more)


# ------------------------------------------------------------------------------- notifications


class DeliveryInline(TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = ("channel", "status", "address", "reason", "provider", "attempts", "sent_at", "link")
    readonly_fields = fields

    @display(description="timeline")
    def link(self, obj: Delivery) -> str:
        return timeline_link(obj.notification_id, obj.id)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("created", "headline", "to", "category_key", "deliveries", "read", "timeline")
    list_filter = (
        "category",
        ("created_at", CreatedFilter),
        ("read_at", admin.EmptyFieldListFilter),
    )
    list_filter_submit = True
    # Shows the box; the search itself is get_search_results (title and body are encrypted: no
    # free-text search over them).
    search_fields = ("id",)
    search_help_text = SEARCH_HELP
    sortable_by = ()
    ordering = ("-id",)
    inlines = [DeliveryInline]
    change_form_outer_before_template = "admin/notifications/notification/summary.html"
    fieldsets = (
        (None, {"fields": ("id", "request", "category", "to_view", "recipient_view", "locale")}),
        ("Inbox item", {"fields": ("title", "body", "action_url", "data_view")}),
        ("State", {"fields": ("created_at", "inbox_at", "read_at", "dismissed_at")}),
    )
    readonly_fields = (
        "id",
        "request",
        "category",
        "to_view",
        "recipient_view",
        "locale",
        "title",
        "body",
        "action_url",
        "data_view",
        "created_at",
        "inbox_at",
        "read_at",
        "dismissed_at",
    )

    def get_queryset(self, request):
        return selectors.notification_log().prefetch_related("deliveries")

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(selectors.notification_log_search(search_term)), False

    def render_change_form(self, request, context, *args: Any, **kwargs: Any):
        obj = context.get("original")
        if obj is not None:  # its rendered title and body, as the recipient's inbox shows them
            content_access.access_record(
                content_access.NOTIFICATION_CONTENT_VIEWED,
                "notifications.notification",
                obj.pk,
                details={"view": "notification"},
            )
        return super().render_change_form(request, context, *args, **kwargs)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/timeline/",
                self.admin_site.admin_view(partial(timeline.timeline_view, self)),
                name="notifications_notification_timeline",
            ),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(partial(timeline.notification_cancel_view, self)),
                name="notifications_notification_cancel",
            ),
            *super().get_urls(),
        ]

    @display(description="created")
    def created(self, obj: Notification) -> str:
        return when(obj.created_at)

    @display(description="title")
    def headline(self, obj: Notification) -> str:
        # An email-only send keeps no inbox title: say what was sent instead.
        return cut(obj.title or obj.request.template_key or f"{obj.category_id} (inline)", 60)

    @display(description="to")
    def to(self, obj: Notification) -> str:
        return _recipient(obj)

    @display(description="category")
    def category_key(self, obj: Notification) -> str:
        return obj.category_id

    @display(description="to")
    def to_view(self, obj: Notification) -> str:
        return _recipient(obj)

    @display(description="recipient as named")
    def recipient_view(self, obj: Notification) -> str:
        return pairs(obj.recipient)

    @display(description="data")
    def data_view(self, obj: Notification) -> str:
        return pairs(obj.data)

    @display(description="deliveries")
    def deliveries(self, obj: Notification) -> str:
        return format_html_join(
            " ",
            '<span class="whitespace-nowrap">{} {}</span>',
            (
                (d.channel, _label(d.status))
                for d in sorted(obj.deliveries.all(), key=lambda d: d.channel)
            ),
        )

    @display(description="read", boolean=True)
    def read(self, obj: Notification) -> bool:
        return obj.read_at is not None

    @display(description="timeline")
    def timeline(self, obj: Notification) -> str:
        return timeline_link(obj.id)


def _label(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "")
    return format_html(
        '<span class="inline-block font-semibold h-5 leading-5 px-1.5 rounded-default text-[11px] '
        'uppercase whitespace-nowrap {}">{}</span>',
        {
            "success": "bg-green-100 text-green-700 dark:bg-green-500/20 dark:text-green-400",
            "danger": "bg-red-100 text-red-700 dark:bg-red-500/20 dark:text-red-400",
            "warning": "bg-orange-100 text-orange-700 dark:bg-orange-500/20 dark:text-orange-400",
            "info": "bg-blue-100 text-blue-700 dark:bg-blue-500/20 dark:text-blue-400",
            "primary": "bg-primary-100 text-primary-700 dark:bg-primary-500/20",
        }.get(colour, "bg-base-500/8 text-base-700 dark:bg-base-500/20 dark:text-base-200"),
        status,
    )


# ---------------------------------------------------------------------------------- deliveries


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_title = "Delivery log"
    list_display = (
        "created",
        "to",
        "channel",
        "status_label",
        "provider",
        "attempts",
        "why",
        "category",
        "timeline",
    )
    list_filter = (
        "status",
        "channel",
        ProviderFilter,
        "priority",
        "possibly_duplicate",
        ("created_at", CreatedFilter),
    )
    list_filter_submit = True
    list_per_page = 50
    search_fields = ("address_hash",)  # shows the box; the search is get_search_results
    search_help_text = SEARCH_HELP
    sortable_by = ()
    ordering = ("-id",)
    actions = ["cancel_selected", "resend_ambiguous"]
    change_form_outer_before_template = "admin/notifications/delivery/summary.html"
    fieldsets = (
        (
            None,
            {"fields": ("id", "notification", "channel", "address", "status", "reason", "digest")},
        ),
        (
            "Provider",
            {
                "fields": (
                    "provider",
                    "provider_message_id",
                    "attempts",
                    "provider_attempts",
                    "possibly_duplicate",
                    "crashes",
                    "error",
                    "devices",
                    "template_version",
                    "variant",
                )
            },
        ),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "scheduled_for",
                    "queued_at",
                    "sending_at",
                    "provider_call_at",
                    "next_attempt_at",
                    "sent_at",
                    "delivered_at",
                    "failed_at",
                    "cancelled_at",
                )
            },
        ),
    )
    readonly_fields = (
        "id",
        "notification",
        "channel",
        "address",
        "status",
        "reason",
        "digest",
        "provider",
        "provider_message_id",
        "attempts",
        "provider_attempts",
        "possibly_duplicate",
        "crashes",
        "error",
        "devices",
        "template_version",
        "variant",
        "created_at",
        "scheduled_for",
        "queued_at",
        "sending_at",
        "provider_call_at",
        "next_attempt_at",
        "sent_at",
        "delivered_at",
        "failed_at",
        "cancelled_at",
    )

    def get_queryset(self, request):
        return selectors.delivery_log()

    def lookup_allowed(self, lookup, value, request=None):
        # A digest's items, linked from the Digests page (on the delivery_digest index).
        return lookup == "digest__id__exact" or super().lookup_allowed(lookup, value, request)

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(selectors.delivery_log_search(search_term).deliveries()), False

    def get_urls(self):
        return [
            path(
                "provider-health/",
                self.admin_site.admin_view(partial(console.provider_health, self)),
                name="notifications_provider_health",
            ),
            path(
                "send-test/",
                self.admin_site.admin_view(partial(send_test.send_test_view, self)),
                name="notifications_send_test",
            ),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(partial(timeline.delivery_cancel_view, self)),
                name="notifications_delivery_cancel",
            ),
            path(
                "<path:object_id>/resend/",
                self.admin_site.admin_view(partial(timeline.delivery_resend_view, self)),
                name="notifications_delivery_resend",
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, *args: Any, **kwargs: Any):
        obj = context.get("original")
        if obj is not None:
            context.update(timeline.delivery_buttons(request, obj))
        return super().render_change_form(request, context, *args, **kwargs)

    @display(description="created")
    def created(self, obj: Delivery) -> str:
        return when(obj.created_at)

    @display(description="to")
    def to(self, obj: Delivery) -> str:
        return _recipient(obj.notification, obj)

    @display(description="status", label=STATUS_COLOURS)
    def status_label(self, obj: Delivery) -> str:
        # A delivery sent again after a worker died in its provider call says so in the log.
        return f"{obj.status} · possible duplicate" if obj.possibly_duplicate else obj.status

    @display(description="reason or error")
    def why(self, obj: Delivery) -> str:
        return cut(obj.reason or obj.error, 50) if (obj.reason or obj.error) else "—"

    @display(description="category")
    def category(self, obj: Delivery) -> str:
        return obj.notification.category_id

    @display(description="timeline")
    def timeline(self, obj: Delivery) -> str:
        return timeline_link(obj.notification_id, obj.id)

    @display(description="devices")
    def devices(self, obj: Delivery) -> str:
        return pairs(obj.device_results)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return timeline.can_cancel(request)

    @admin.action(description="Cancel selected (those not yet sent)", permissions=["cancel"])
    def cancel_selected(self, request, queryset):
        cancelled = services.deliveries_cancel(
            delivery_ids=queryset.values_list("id", flat=True), actor=_actor(request)
        )
        self.message_user(request, f"{cancelled} delivery(ies) cancelled.")

    @admin.action(description="Send ambiguous deliveries again (may duplicate)")
    def resend_ambiguous(self, request, queryset):
        queued = services.deliveries_resend_ambiguous(
            delivery_ids=queryset.values_list("id", flat=True), actor=_actor(request)
        )
        self.message_user(request, f"{queued} delivery(ies) queued again.")
