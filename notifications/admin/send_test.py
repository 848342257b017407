""" "Send a test": a message typed in the form, or a template version (a draft included) rendered
with its variables' examples, sent to an address typed in the form through the send service."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from rest_framework.exceptions import ValidationError as DRFValidationError
from unfold.widgets import (
    UnfoldAdminSelectWidget,
    UnfoldAdminTextareaWidget,
    UnfoldAdminTextInputWidget,
)

from communication.exceptions import APIError, NotFoundError
from notifications import services
from notifications.admin.common import timeline_url
from notifications.api.serializers import SendSerializer
from templates_app import selectors as template_selectors
from templates_app import services as template_services
from templates_app.models import TemplateVersion

TO_HELP = {
    "email": "An email address (yours by default).",
    "sms": "A phone number in E.164 (+33…).",
    "push": "The user id (user_id) whose devices get it.",
    "in_app": "The user id (user_id) whose inbox gets it.",
}


class SendTestForm(forms.Form):
    channel = forms.ChoiceField(
        choices=[("email", "Email"), ("sms", "SMS")], widget=UnfoldAdminSelectWidget
    )
    to = forms.CharField(
        help_text="An email address, or a phone number in E.164 (+33…).",
        widget=UnfoldAdminTextInputWidget,
    )
    subject = forms.CharField(
        initial="Test from the Communication Service", widget=UnfoldAdminTextInputWidget
    )
    body = forms.CharField(widget=UnfoldAdminTextareaWidget, initial="This is a test message.")

    def __init__(self, *args: Any, version: TemplateVersion | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.version = version
        if version is not None:
            # The template says the channel and the content; only the recipient is typed.
            channel = version.template.channel
            self.fields["channel"] = forms.CharField(
                initial=channel, disabled=True, widget=forms.HiddenInput
            )
            self.fields["to"].help_text = TO_HELP.get(channel, "")
            del self.fields["subject"], self.fields["body"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("channel") in ("email", "sms") and data.get("to"):
            try:
                data["to"] = services.address_normalize(data["channel"], data["to"])
            except ValidationError as exc:
                self.add_error("to", exc)
        return data


def send_test_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("notifications.add_notificationrequest"):
        raise PermissionDenied
    version_id = request.POST.get("template_version") or request.GET.get("template_version")
    version, preview, preview_error = None, None, ""
    if version_id:
        try:
            version = template_selectors.version_get(version_id)
        except NotFoundError as exc:
            raise Http404("No such template version.") from exc
        try:
            preview = template_services.template_preview(
                key=version.template.key, version_id=version.pk
            )
        except APIError as exc:
            preview_error = str(exc.detail)
    form = SendTestForm(
        request.POST or None, version=version, initial={"to": _default_to(request, version)}
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            payload = services.test_send_payload(
                channel=data["channel"],
                to=data["to"],
                content=None if version else {"subject": data["subject"], "body": data["body"]},
                template_version=version.pk if version else None,
            )
            # The send API's own validator: a test is held to what any request may carry.
            outcome = services.notification_send(
                caller=f"admin:{request.user.get_username()}",
                payload=SendSerializer.validated(payload),
            )
        except (APIError, DRFValidationError) as exc:  # shown to the operator, never swallowed
            messages.error(request, f"Not sent: {_explain(exc.detail)}")
        else:
            notification = outcome.body["notifications"][0]
            delivery = notification["deliveries"][0]
            reason = f": {delivery['reason']}" if delivery["reason"] else ""
            messages.success(request, f"Test {delivery['status']}{reason}.")
            return redirect(timeline_url(notification["id"], delivery["id"]))
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Send a test" if version is None else f"Send a test of {version.template.key}",
        "form": form,
        "opts": model_admin.model._meta,
        "version": version,
        "preview": preview,
        "preview_error": preview_error,
    }
    return TemplateResponse(request, "admin/notifications/send_test.html", context)


def _explain(detail: Any, path: str = "") -> str:
    """A validator's answer as "field: message" phrases."""
    if isinstance(detail, dict):
        return "; ".join(_explain(v, f"{path}.{k}" if path else str(k)) for k, v in detail.items())
    if isinstance(detail, list):
        return "; ".join(_explain(v, path) for v in detail)
    return f"{path}: {detail}" if path else str(detail)


def _default_to(request: HttpRequest, version: TemplateVersion | None) -> str:
    user = request.user
    channel = version.template.channel if version else "email"
    if channel == "email":
        return getattr(user, "email", "") or ""
    if channel == "sms":
        return getattr(user, "phone", "") or ""
    return getattr(user, "external_id", "") or ""
