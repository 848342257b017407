"""The console's outbound webhook endpoints: who receives what, each endpoint's delivery log
(messages, attempts, status codes, latency), and the two buttons staff press: replay a
message, re-enable an endpoint that was disabled. Both go through
``notifications.services.webhooks``, which records them in the audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial, wraps
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import path
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from unfold.decorators import display

from notifications.admin.common import STATUS_COLOURS, ReadOnlyAdmin, cut, when
from notifications.models import WebhookEndpoint, WebhookMessage
from notifications.services import webhooks

LOG_SIZE = 50
MESSAGE_COLOURS = {**STATUS_COLOURS, "pending": "info", "delivering": "warning", "dead": "danger"}


def can_act(request: HttpRequest) -> bool:
    return request.user.has_perm("notifications.change_webhookendpoint")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_title = "Webhook endpoints"
    list_display = ("owner", "url_view", "events_view", "state", "consecutive_failures", "created")
    list_filter = ("owner",)
    search_fields = ("owner",)
    ordering = ("-created_at",)
    change_form_outer_before_template = "admin/notifications/webhookendpoint/summary.html"
    fields = (
        "owner",
        "url",
        "events_view",
        "scopes",
        "description",
        "state",
        "consecutive_failures",
        "previous_secret_expires_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    @display(description="URL")
    def url_view(self, obj: WebhookEndpoint) -> str:
        return cut(obj.url, 60)

    @display(description="events")
    def events_view(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events)

    @display(description="state")
    def state(self, obj: WebhookEndpoint) -> str:
        return "enabled" if obj.enabled else f"disabled: {obj.disabled_reason or 'by its owner'}"

    @display(description="created")
    def created(self, obj: WebhookEndpoint) -> str:
        return when(obj.created_at)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/replay/<str:event_id>/",
                self.admin_site.admin_view(partial(replay_view, self)),
                name="notifications_webhookendpoint_replay",
            ),
            path(
                "<path:object_id>/replay-since/",
                self.admin_site.admin_view(partial(replay_since_view, self)),
                name="notifications_webhookendpoint_replay_since",
            ),
            path(
                "<path:object_id>/enable/",
                self.admin_site.admin_view(partial(enable_view, self)),
                name="notifications_webhookendpoint_enable",
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, *args: Any, **kwargs: Any):
        endpoint = context.get("original")
        if endpoint is not None:
            log = (
                WebhookMessage.objects.filter(endpoint=endpoint)
                .prefetch_related("attempts_log")
                .order_by("-id")[:LOG_SIZE]
            )
            context.update(
                can_act=can_act(request),
                log=[
                    {
                        "message": m,
                        "colour": MESSAGE_COLOURS.get(m.status, ""),
                        "attempts": sorted(m.attempts_log.all(), key=lambda a: -a.id),
                    }
                    for m in log
                ],
            )
        return super().render_change_form(request, context, *args, **kwargs)


def _endpoint(object_id: str) -> WebhookEndpoint:
    try:
        return WebhookEndpoint.objects.get(pk=uuid.UUID(object_id))
    except (ValueError, WebhookEndpoint.DoesNotExist):
        raise Http404 from None


def _endpoint_action(
    act: Callable[..., None],
) -> Callable[..., HttpResponse]:
    """A button on an endpoint's page: a POST by staff who may act, on an endpoint that exists,
    answered by the endpoint's page again (with the message ``act`` left)."""

    @wraps(act)
    def view(model_admin: Any, request: HttpRequest, object_id: str, **kwargs: Any):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not can_act(request):
            raise PermissionDenied
        endpoint = _endpoint(object_id)
        act(request, endpoint, **kwargs)
        return redirect("admin:notifications_webhookendpoint_change", endpoint.pk)

    return view


@_endpoint_action
def replay_view(request: HttpRequest, endpoint: WebhookEndpoint, event_id: str) -> None:
    try:
        webhooks.message_replay(endpoint, event_id)
    except WebhookMessage.DoesNotExist:
        raise Http404 from None
    messages.success(request, f"{event_id} will be sent again.")


@_endpoint_action
def replay_since_view(request: HttpRequest, endpoint: WebhookEndpoint) -> None:
    try:
        since = parse_datetime(request.POST.get("since", "").replace("\x00", ""))
    except ValueError:  # well formed, not a date (a 13th month)
        since = None
    if since is None:
        messages.error(request, "Give the date and time to replay from.")
        return
    if timezone.is_naive(since):
        since = timezone.make_aware(since)  # as typed, in the console's time zone
    count = webhooks.messages_replay_since(endpoint, since)
    messages.success(request, f"{count} message(s) will be sent again.")


@_endpoint_action
def enable_view(request: HttpRequest, endpoint: WebhookEndpoint) -> None:
    webhooks.endpoint_update(endpoint, enabled=True)
    messages.success(request, "Enabled: what waited for it goes out now.")
