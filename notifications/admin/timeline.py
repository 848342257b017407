"""One notification's timeline (request → each delivery → its attempts and provider events) and
the two buttons staff press on it: cancel what has not gone out, resend what failed.

The buttons are forms of their own on the timeline page (no change form around them) and on the
delivery's page (outside its change form): each a POST with the CSRF token, calling a service.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from communication import content_access
from communication.exceptions import APIError, NotFoundError
from notifications import selectors, services
from notifications.admin.common import STATUS_COLOURS, timeline_url
from notifications.models import Delivery, Notification


def can_cancel(request: HttpRequest) -> bool:
    return request.user.has_perm("notifications.change_delivery")


def can_resend(request: HttpRequest) -> bool:
    # A resend is a new request, as a test send is.
    return request.user.has_perm("notifications.add_notificationrequest")


def _actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


def _post_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Django's ``require_POST`` for these views, whose first argument is the model admin."""

    @wraps(view)
    def wrapper(model_admin: Any, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        return view(model_admin, request, *args, **kwargs)

    return wrapper


def delivery_buttons(request: HttpRequest, delivery: Delivery) -> dict[str, Any]:
    """What the delivery's page offers: its timeline, and cancel or resend where they apply."""
    return {
        "timeline_url": timeline_url(delivery.notification_id, delivery.id),
        "show_cancel": can_cancel(request) and delivery.status in services.CANCELLABLE,
        "show_resend": can_resend(request) and delivery.status in services.RESENDABLE,
        "status_colour": STATUS_COLOURS.get(delivery.status, ""),
    }


def timeline_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    try:
        found = selectors.notification_timeline(object_id)
    except NotFoundError as exc:
        raise Http404("No such notification.") from exc
    cancel, resend = can_cancel(request), can_resend(request)
    deliveries = [
        {
            "timeline": line,
            "delivery": line.delivery,
            "colour": STATUS_COLOURS.get(line.delivery.status, ""),
            "entries": [
                {"entry": e, "colour": STATUS_COLOURS.get(e.type, "")} for e in line.entries
            ],
            "resends": [
                {"delivery": r, "colour": STATUS_COLOURS.get(r.status, "")} for r in line.resends
            ],
            "show_cancel": cancel and line.delivery.status in services.CANCELLABLE,
            "show_resend": resend
            and line.delivery.status in services.RESENDABLE
            and not line.resends,
        }
        for line in found.deliveries
    ]
    notification = found.notification
    # The page is headed by the notification's rendered title.
    content_access.access_record(
        content_access.NOTIFICATION_CONTENT_VIEWED,
        "notifications.notification",
        notification.pk,
        details={"view": "timeline"},
    )
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Timeline: {notification}",
        "opts": Notification._meta,
        "found": found,
        "notification": notification,
        "original": notification,  # the breadcrumbs end with this notification
        "request_": found.request,
        "deliveries": deliveries,
        "resent_from_colour": STATUS_COLOURS.get(getattr(found.resent_from, "status", ""), ""),
        "show_cancel_all": sum(1 for d in deliveries if d["show_cancel"]) > 1,
        "here": request.get_full_path(),
    }
    return TemplateResponse(request, "admin/notifications/timeline.html", context)


@_post_only
def delivery_cancel_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    if not can_cancel(request):
        raise PermissionDenied
    cancelled = services.deliveries_cancel(delivery_ids=[_uuid(object_id)], actor=_actor(request))
    if cancelled:
        messages.success(request, "Cancelled: it will not be sent.")
    else:
        messages.warning(request, "Not cancelled: it was no longer waiting (see its status).")
    return _back(request, object_id)


@_post_only
def notification_cancel_view(
    model_admin: Any, request: HttpRequest, object_id: str
) -> HttpResponse:
    if not can_cancel(request):
        raise PermissionDenied
    cancelled = services.notification_cancel(
        notification_id=_uuid(object_id), actor=_actor(request)
    )
    messages.success(request, f"{cancelled} delivery(ies) cancelled.")
    return _back(request)


@_post_only
def delivery_resend_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    if not can_resend(request):
        raise PermissionDenied
    try:
        new = services.delivery_resend(delivery_id=_uuid(object_id), actor=_actor(request))
    except APIError as exc:
        messages.error(request, f"Not resent: {exc.detail}")
        return _back(request, object_id)
    link = format_html(
        '<a href="{}">{} delivery {}</a>',
        timeline_url(new.notification_id, new.id),
        new.channel,
        str(new.id)[-12:],
    )
    if new.status in ("suppressed", "skipped"):
        # The rules of a send held it back, as they would a caller's request.
        messages.warning(
            request,
            format_html("Resent as {}, {} by the send rules: {}", link, new.status, new.reason),
        )
    else:
        messages.success(request, format_html("Resent as {} ({}).", link, new.status))
    return _back(request, object_id)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise Http404("Not an id.") from exc


def _back(request: HttpRequest, delivery_id: str | None = None) -> HttpResponse:
    """To the page the button was on (``next``), else the delivery's page."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    if delivery_id:
        return redirect("admin:notifications_delivery_change", _uuid(delivery_id))
    return redirect("admin:notifications_delivery_changelist")
