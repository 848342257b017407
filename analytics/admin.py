from django.contrib import admin
from unfold.admin import ModelAdmin

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
        "delivery_id",
    )
    list_filter = ("type", "channel", "provider")
    search_fields = ("=delivery_id", "=notification_id", "caller")
    date_hierarchy = "occurred_at"
    show_full_result_count = False

    def has_change_permission(self, request, obj=None):
        return False  # append-only

    def has_add_permission(self, request):
        return False
