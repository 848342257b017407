"""The event table, read-only: every row is a fact that happened (append-only); and the
analytics pages' routes on the admin site (``analytics.console``)."""

from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from unfold.admin import ModelAdmin

from analytics import console
from analytics.models import Event


@admin.register(Event)
class EventAdmin(ModelAdmin):
    list_display = (
        "occurred_at",
        "type",
        "channel",
        "provider",
        "category",
        "latency_ms",
        "delivery_link",
    )
    list_filter = ("type", "channel", "provider")
    search_fields = ("=delivery_id", "=notification_id")
    date_hierarchy = "occurred_at"
    show_full_result_count = False
    fields = (
        "type",
        "occurred_at",
        ("channel", "provider", "category"),
        "caller",
        "notification_id",
        "delivery_link",
        ("latency_ms", "cost"),
        "details",
    )
    readonly_fields = (
        "type",
        "occurred_at",
        "channel",
        "provider",
        "category",
        "caller",
        "notification_id",
        "delivery_link",
        "latency_ms",
        "cost",
        "details",
    )

    @admin.display(description="delivery")
    def delivery_link(self, obj: Event) -> str:
        if obj.delivery_id is None:
            return "—"
        try:
            # By name only: analytics imports no other app.
            url = reverse("admin:notifications_delivery_change", args=[obj.delivery_id])
        except NoReverseMatch:
            return str(obj.delivery_id)
        return format_html('<a href="{}">{}</a>', url, obj.delivery_id)

    @admin.display(description="details")
    def details(self, obj: Event) -> str:
        if not obj.data:
            return "—"
        return format_html(
            '<dl style="display:grid;grid-template-columns:max-content 1fr;gap:0 1rem">{}</dl>',
            format_html_join(
                "",
                '<dt class="font-semibold">{}</dt><dd style="overflow-wrap:anywhere">{}</dd>',
                sorted((str(k), v) for k, v in obj.data.items()),
            ),
        )

    # Append-only: nothing is added, changed or removed here.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# The analytics pages live under the admin site (/admin/analytics/…), beside the app's model
# pages: unfold's site adds the routes its ``extra_urls`` returns, read when the URLconf loads.
_previous_extra_urls = getattr(admin.site, "extra_urls", None)


def _extra_urls():
    earlier = _previous_extra_urls() if callable(_previous_extra_urls) else []
    return [*earlier, *console.urls(admin.site.admin_view)]


admin.site.extra_urls = _extra_urls  # type: ignore[attr-defined]
