"""Staff views of the pipeline: requests, notifications, the delivery log with each delivery's
event timeline, the outbox, suppressions, consent, provider health and a "send test" form."""

from __future__ import annotations

from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from unfold.admin import ModelAdmin, TabularInline

from analytics.models import Event
from notifications import console, services
from notifications.models import (
    Consent,
    Delivery,
    Device,
    Notification,
    NotificationPreference,
    NotificationRequest,
    OutboxMessage,
    QuietHours,
    Suppression,
)


class DeliveryInline(TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = ("channel", "status", "reason", "provider", "attempts", "sent_at", "link")
    readonly_fields = fields

    def link(self, obj):
        url = reverse("admin:notifications_delivery_change", args=[obj.pk])
        return format_html('<a href="{}">timeline</a>', url)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(NotificationRequest)
class NotificationRequestAdmin(ModelAdmin):
    list_display = (
        "created_at",
        "caller",
        "category",
        "template_key",
        "priority",
        "scheduled_at",
        "cancelled_at",
    )
    list_filter = ("category", "priority", "caller")
    search_fields = ("=id", "caller", "idempotency_key", "template_key")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in NotificationRequest._meta.fields]
    show_full_result_count = False


@admin.register(Notification)
class NotificationAdmin(ModelAdmin):
    list_display = ("created_at", "user", "email", "phone", "category", "title", "read_at")
    list_filter = ("category", ("read_at", admin.EmptyFieldListFilter))
    search_fields = ("=id", "user__external_id", "email", "phone", "title")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Notification._meta.fields]
    inlines = [DeliveryInline]
    show_full_result_count = False


@admin.register(Delivery)
class DeliveryAdmin(ModelAdmin):
    list_display = (
        "created_at",
        "channel",
        "address",
        "status",
        "provider",
        "attempts",
        "reason",
        "category",
    )
    list_filter = ("status", "channel", "provider", "priority")
    search_fields = ("=id", "address", "provider_message_id", "=notification__id")
    list_select_related = ("notification",)
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Delivery._meta.fields] + ["timeline"]
    show_full_result_count = False
    actions = ["resend_ambiguous"]

    @admin.display(description="category")
    def category(self, obj):
        return obj.notification.category_id

    @admin.display(description="event timeline")
    def timeline(self, obj):
        rows = Event.objects.filter(delivery_id=obj.id).order_by("occurred_at", "id")
        return format_html(
            "<table><tr><th>when</th><th>event</th><th>provider</th><th>latency</th>"
            "<th>details</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        e.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                        e.type,
                        e.provider or "",
                        f"{e.latency_ms:.0f} ms" if e.latency_ms is not None else "",
                        e.data or "",
                    )
                    for e in rows
                ),
            ),
        )

    @admin.action(description="Send ambiguous deliveries again (may duplicate)")
    def resend_ambiguous(self, request, queryset):
        queued = services.deliveries_resend_ambiguous(
            delivery_ids=queryset.values_list("id", flat=True),
            actor=f"admin:{request.user.get_username()}",
        )
        self.message_user(request, f"{queued} delivery(ies) queued again.")

    def has_add_permission(self, request):
        return False

    def get_urls(self):
        return [
            path(
                "provider-health/",
                self.admin_site.admin_view(partial(console.provider_health, self)),
                name="notifications_provider_health",
            ),
            path(
                "send-test/",
                self.admin_site.admin_view(self.send_test),
                name="notifications_send_test",
            ),
        ] + super().get_urls()

    def send_test(self, request):
        form = SendTestForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            recipient = (
                {"email": data["to"]} if data["channel"] == "email" else {"phone": data["to"]}
            )
            try:
                outcome = services.notification_send(
                    caller=f"admin:{request.user.username}",
                    payload={
                        "recipients": [recipient],
                        "category": "system",
                        "channels": [data["channel"]],
                        "priority": "high",
                        "content": {"subject": data["subject"], "body": data["body"]},
                        "data": {},
                    },
                )
            except Exception as exc:  # shown to the operator, never swallowed silently
                messages.error(request, f"Not sent: {getattr(exc, 'detail', exc)}")
            else:
                delivery = outcome.body["notifications"][0]["deliveries"][0]
                messages.success(request, f"Test {delivery['status']}: delivery {delivery['id']}")
                return redirect("admin:notifications_delivery_change", delivery["id"])
        context = {
            **self.admin_site.each_context(request),
            "title": "Send a test message",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/notifications/send_test.html", context)


class SendTestForm(forms.Form):
    channel = forms.ChoiceField(choices=[("email", "Email"), ("sms", "SMS")])
    to = forms.CharField(help_text="an email address, or a phone number in E.164 (+33…)")
    subject = forms.CharField(initial="Test from the Communication Service")
    body = forms.CharField(widget=forms.Textarea, initial="This is a test message.")

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("channel") and data.get("to"):
            try:
                data["to"] = services.address_normalize(data["channel"], data["to"])
            except ValidationError as exc:
                self.add_error("to", exc)
        return data


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ModelAdmin):
    list_display = ("created_at", "channel", "to", "subject")
    list_filter = ("channel",)
    search_fields = ("to", "subject")
    readonly_fields = (
        "id",
        "delivery",
        "channel",
        "to",
        "subject",
        "text",
        "rendered_html",
        "payload",
        "created_at",
    )
    exclude = ("html",)
    show_full_result_count = False

    @admin.display(description="HTML")
    def rendered_html(self, obj):
        if not obj.html:
            return "—"
        # Shown in a sandboxed frame: a template's HTML must not run in the admin's origin.
        return format_html(
            '<iframe sandbox srcdoc="{}" style="width:100%;height:400px;'
            'border:1px solid #ccc"></iframe>',
            obj.html,
        )

    def has_add_permission(self, request):
        return False


@admin.register(Suppression)
class SuppressionAdmin(ModelAdmin):
    list_display = ("created_at", "channel", "address", "reason")
    list_filter = ("channel", "reason")
    search_fields = ("address",)


@admin.register(Consent)
class ConsentAdmin(ModelAdmin):
    list_display = ("created_at", "user", "channel", "category", "granted", "source")
    list_filter = ("granted", "channel", "category")
    search_fields = ("user__external_id", "source")
    list_select_related = ("user",)
    readonly_fields = ("created_at",)


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(ModelAdmin):
    list_display = ("user", "category", "channel", "enabled", "updated_at")
    list_filter = ("category", "channel", "enabled")
    search_fields = ("user__external_id",)
    list_select_related = ("user",)


@admin.register(QuietHours)
class QuietHoursAdmin(ModelAdmin):
    list_display = ("user", "start", "end", "enabled", "updated_at")
    list_select_related = ("user",)
    search_fields = ("user__external_id",)
    raw_id_fields = ("user",)


@admin.register(Device)
class DeviceAdmin(ModelAdmin):
    list_display = (
        "id",
        "user",
        "platform",
        "app_id",
        "browser",
        "active",
        "failure_count",
        "last_error",
        "last_seen_at",
    )
    list_filter = ("platform", "active")
    search_fields = ("user__external_id", "user__email", "token", "endpoint", "app_id")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "last_seen_at", "deactivated_at")
