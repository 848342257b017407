"""Campaigns in the staff console: a campaign built step by step (its steps inline), the audience's
size beside the segment chosen, a preview of the message for a chosen recipient, a test sent to
oneself, the life-cycle buttons, a progress bar that follows the sending live, and the results per
step and variant.

Everything writes through ``campaigns.services``. The buttons on a campaign's page are
``formaction`` buttons of the change form (a ``<form>`` inside it would be invalid HTML: the
browser would submit the outer form). The page's script is a file
(``campaigns/console/campaign.js``): the console's Content-Security-Policy refuses inline code.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from rest_framework.exceptions import APIException
from unfold.admin import ModelAdmin, StackedInline
from unfold.widgets import UnfoldAdminCheckboxSelectMultipleWidget, UnfoldAdminTextareaWidget

from campaigns import console, selectors, services
from campaigns.audiences import audience_count
from campaigns.models import Campaign, CampaignStep
from campaigns.services import campaigns as life
from campaigns.services.campaigns import approval_refusal
from communication.models import User
from notifications.models import Channel, Delivery
from notifications.rendering import recipient_context, render, template_keys
from templates_app import services as template_services

S = Campaign.Status
# The form's fields: what a draft's edit may change (the service's list), steps aside (inline).
FORM_FIELDS = tuple(f for f in life.DRAFT_FIELDS if f != "steps")
STEP_FIELDS = ("position", "template_key", "content", "delay", "send_at", "condition")
# What each button did, for the message shown after it.
DONE = {
    "schedule": "scheduled",
    "approve": "approved and scheduled",
    "pause": "paused",
    "resume": "resumed",
    "cancel": "cancelled",
}
VERBS: dict[str, Callable[..., Campaign]] = {
    "schedule": services.campaign_schedule,
    "approve": services.campaign_approve,
    "pause": services.campaign_pause,
    "resume": services.campaign_resume,
    "cancel": services.campaign_cancel,
}


def _error_text(exc: APIException) -> str:
    fields = getattr(exc, "fields", None)
    if fields:
        return "; ".join(f"{_field_label(k)}: {' '.join(map(str, v))}" for k, v in fields.items())
    return str(exc.detail)


def _field_label(path: str) -> str:
    """``steps[1].condition.op`` as staff read it: ``Step 2 condition.op``."""
    if path.startswith("steps[") and "]" in path:
        index, rest = path[6:].split("]", 1)
        if index.isdigit():
            return f"Step {int(index) + 1}" + (f" {rest.lstrip('.')}" if rest else "")
    return path


class IndentedJSONField(forms.JSONField):
    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


def _json_field(rows: int, help_text: str) -> IndentedJSONField:
    return IndentedJSONField(
        required=False,
        widget=UnfoldAdminTextareaWidget(attrs={"rows": rows, "class": "font-mono"}),
        help_text=help_text,
    )


class CampaignForm(forms.ModelForm):
    channels = forms.MultipleChoiceField(
        choices=Channel.choices,
        required=False,
        widget=UnfoldAdminCheckboxSelectMultipleWidget,
        help_text="None ticked: each recipient's own channels for the category (auto).",
    )
    data = _json_field(4, "Variables every message gets, as a JSON object.")  # type: ignore[assignment]  # a form field named like BaseForm.data, as DRF's

    class Meta:
        model = Campaign
        fields = FORM_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "channels" in self.fields and self.instance.channels == ["auto"]:
            self.initial["channels"] = []
        if "data" in self.fields and self.initial.get("data") is None:
            self.initial["data"] = {}
        if "segment" in self.fields:
            # campaign.js reads this to show the size of the segment chosen.
            widget: Any = self.fields["segment"].widget
            # The admin wraps the select (the add/change links): the attribute goes on the select.
            getattr(widget, "widget", widget).attrs["data-count-url"] = reverse(
                "admin:campaigns_campaign_segment_count",
                args=["00000000-0000-0000-0000-000000000000"],
            )

    def clean_channels(self) -> list[str]:
        return list(self.cleaned_data.get("channels") or []) or ["auto"]

    def clean_data(self) -> dict[str, Any]:
        return self.cleaned_data.get("data") or {}


class StepForm(forms.ModelForm):
    content = _json_field(
        3, 'Inline content instead of a template: {"subject": …, "body": …, "html": …}.'
    )
    condition = _json_field(
        2,
        'Who gets it: {"previous": "opened" | "clicked" | "not_opened" | "not_clicked"}, '
        "a segment rule, or empty for everyone.",
    )

    class Meta:
        model = CampaignStep
        fields = STEP_FIELDS


def _steps_of(formset) -> list[dict[str, Any]]:
    forms_ = [
        f
        for f in formset.forms
        if getattr(f, "cleaned_data", None) and not f.cleaned_data.get("DELETE")
    ]
    steps = [
        {
            "position": f.cleaned_data.get("position"),
            "template_key": f.cleaned_data.get("template_key") or "",
            "content": f.cleaned_data.get("content") or {},
            "delay": f.cleaned_data.get("delay"),
            "send_at": f.cleaned_data.get("send_at"),
            "condition": f.cleaned_data.get("condition") or {},
        }
        for f in forms_
    ]
    return sorted(steps, key=lambda s: s["position"] or 0)


def _draft_fields(campaign: Campaign) -> dict[str, Any]:
    return {
        "name": campaign.name,
        "category": campaign.category_id,
        "channels": campaign.channels,
        "segment": campaign.segment,
        "static_list": campaign.static_list,
        "data": campaign.data,
        "send_at": campaign.send_at,
        "local_time": campaign.local_time,
        "cron": campaign.cron,
        "timezone": campaign.timezone,
        "window_start": campaign.window_start,
        "window_end": campaign.window_end,
    }


class StepFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        campaign = self.instance
        # Past draft the steps are read-only; with the campaign's own form invalid its errors
        # say what is wrong.
        if campaign.status != S.DRAFT or not campaign.name or not campaign.category_id:
            return
        try:
            services.campaign_validate(**_draft_fields(campaign), steps=_steps_of(self))
        except APIException as exc:
            raise forms.ValidationError(_error_text(exc)) from None


class CampaignStepInline(StackedInline):
    model = CampaignStep
    form = StepForm
    formset = StepFormSet
    fields = STEP_FIELDS
    extra = 0
    min_num = 0
    ordering = ("position",)

    def get_extra(self, request, obj=None, **kwargs):
        return 1 if obj is None else 0  # a new campaign starts with its first step

    def _editable(self, obj) -> bool:
        return obj is None or obj.status == S.DRAFT

    def has_add_permission(self, request, obj=None):
        return self._editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._editable(obj) and super().has_delete_permission(request, obj)


@dataclass(frozen=True)
class Button:
    action: str
    label: str
    url: str
    variant: str = "default"
    refusal: str | None = None


@admin.register(Campaign)
class CampaignAdmin(ModelAdmin):
    form = CampaignForm
    inlines = [CampaignStepInline]
    list_display = ("name", "status", "category", "audience_count", "created_by", "created_at")
    list_filter = ("status",)
    search_fields = ("name",)
    readonly_fields = (
        "status",
        "audience_now",
        "audience_count",
        "pause_reason",
        "created_by",
        "approved_by",
        "scheduled_at",
        "started_at",
        "completed_at",
        "cancelled_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "status", "category", "channels", "data")}),
        ("Audience", {"fields": ("segment", "static_list", "audience_now")}),
        (
            "Schedule",
            {
                "fields": (
                    "send_at",
                    "local_time",
                    "cron",
                    "timezone",
                    "window_start",
                    "window_end",
                ),
                "description": "Leave the time empty to send as soon as it is scheduled; a "
                "local time sends at that hour in each recipient's zone; a cron expression "
                "(at most hourly) repeats it in the time zone.",
            },
        ),
        (
            "Record",
            {
                "fields": (
                    "audience_count",
                    "pause_reason",
                    "created_by",
                    "approved_by",
                    "scheduled_at",
                    "started_at",
                    "completed_at",
                    "cancelled_at",
                )
            },
        ),
    )
    change_form_template = "admin/campaigns/campaign/change_form.html"

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.status != S.DRAFT:
            # Past draft only the name changes (as through the API).
            readonly += [f for f in FORM_FIELDS if f != "name"]
        return readonly

    def has_delete_permission(self, request, obj=None):
        # A campaign that went out is history; a draft may go.
        if obj is not None and obj.status != S.DRAFT:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would skip the rule above
        return actions

    @admin.display(description="users in the audience now")
    def audience_now(self, obj: Campaign) -> str:
        if obj._state.adding or (obj.segment_id is None and obj.static_list_id is None):
            return "—"
        try:
            return f"{audience_count(obj):,}"
        except APIException:  # a segment's rules stored before a stricter validator
            return "invalid segment rules: fix them to count"

    # ------------------------------------------------------------------------------- saving

    def save_model(self, request, obj, form, change):
        """Nothing yet: the campaign and its steps are written together by the service, in
        ``save_related``, where the steps' formset is at hand."""

    def save_related(self, request, form, formsets, change):
        steps = _steps_of(formsets[0]) if formsets else []
        obj: Campaign = form.instance
        if not change:
            created = services.campaign_create(
                actor=request.user, **_draft_fields(obj), steps=steps
            )
            # The admin logs and redirects with ``obj``: give it the row the service made.
            obj.pk, obj.created_by = created.pk, created.created_by
            obj.created_at, obj.updated_at = created.created_at, created.updated_at
            obj._state.adding = False
            return
        stored = Campaign.objects.get(pk=obj.pk)
        if stored.status == S.DRAFT:
            services.campaign_update(
                campaign=stored, actor=request.user, **_draft_fields(obj), steps=steps
            )
        elif "name" in form.changed_data:
            services.campaign_update(campaign=stored, actor=request.user, name=obj.name)

    def construct_change_message(self, request, form, formsets, add=False):
        # The service writes the steps, not the formsets: only the form says what changed.
        return [{"added": {}}] if add else [{"changed": {"fields": form.changed_data}}]

    # -------------------------------------------------------------------- page and its views

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/transition/<str:action>/",
                wrap(self.transition_view),
                name="campaigns_campaign_transition",
            ),
            path(
                "<path:object_id>/test-send/",
                wrap(self.test_send_view),
                name="campaigns_campaign_test_send",
            ),
            path(
                "<path:object_id>/preview/",
                wrap(self.preview_view),
                name="campaigns_campaign_preview",
            ),
            path(
                "<uuid:campaign_id>/progress.json",
                wrap(console.progress_view),
                name="campaigns_campaign_progress",
            ),
            path(
                "segment-count/<uuid:segment_id>.json",
                wrap(console.segment_count_view),
                name="campaigns_campaign_segment_count",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        campaign = Campaign.objects.filter(pk=object_id).first() if _is_uuid(object_id) else None
        if campaign is not None:
            extra_context.update(
                campaign=campaign,
                buttons=self._buttons(request, campaign),
                progress_url=reverse("admin:campaigns_campaign_progress", args=[campaign.pk]),
                preview_url=reverse("admin:campaigns_campaign_preview", args=[campaign.pk]),
                test_send_url=reverse("admin:campaigns_campaign_test_send", args=[campaign.pk]),
                can_change=super().has_change_permission(request),
                results=selectors.campaign_results(campaign=campaign),
                report_url=_report_url(campaign),
                statuses=[(s.value, s.label) for s in _delivery_statuses()],
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def _buttons(self, request, campaign: Campaign) -> list[Button]:
        if not super().has_change_permission(request):
            return []

        def button(action_name: str, label: str, **kwargs: Any) -> Button:
            url = reverse("admin:campaigns_campaign_transition", args=[campaign.pk, action_name])
            return Button(action_name, label, url, **kwargs)

        status = campaign.status
        out = []
        if status == S.DRAFT:
            out.append(button("schedule", "Schedule (as saved)", variant="primary"))
        if status == S.PENDING_APPROVAL:
            refusal = approval_refusal(campaign=campaign, actor=request.user)
            out.append(button("approve", "Approve", variant="primary", refusal=refusal))
        if status in (S.SCHEDULED, S.RUNNING):
            out.append(button("pause", "Pause"))
        if status == S.PAUSED:
            out.append(button("resume", "Resume", variant="primary"))
        if status not in (S.COMPLETED, S.CANCELLED):
            out.append(button("cancel", "Cancel campaign", variant="danger"))
        return out

    def _campaign_or_back(self, object_id):
        campaign = Campaign.objects.filter(pk=object_id).first() if _is_uuid(object_id) else None
        if campaign is None:
            return None, HttpResponseRedirect(reverse("admin:campaigns_campaign_changelist"))
        return campaign, None

    def _back_to(self, campaign: Campaign) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))

    def transition_view(self, request, object_id, action):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if action not in VERBS or not super().has_change_permission(request):
            raise PermissionDenied
        campaign, back = self._campaign_or_back(object_id)
        if campaign is None:
            return back
        try:
            campaign = VERBS[action](campaign=campaign, actor=request.user)
        except APIException as exc:
            messages.error(request, f"{campaign}: {_error_text(exc)}")
        else:
            done = DONE[action]
            if campaign.status == S.PENDING_APPROVAL:
                done = (
                    f"waiting for approval: its audience ({campaign.audience_count:,}) is above "
                    "the threshold, someone else approves it"
                )
            messages.success(request, f"{campaign}: {done}.")
        return self._back_to(campaign)

    def test_send_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not super().has_change_permission(request):
            raise PermissionDenied
        campaign, back = self._campaign_or_back(object_id)
        if campaign is None:
            return back
        email = getattr(request.user, "email", "")
        if not email:
            messages.error(request, "Your account has no email address to send the test to.")
            return self._back_to(campaign)
        try:
            body = services.campaign_test_send(
                campaign=campaign, actor=request.user, to={"email": email}
            )
        except APIException as exc:
            messages.error(request, f"Test not sent: {_error_text(exc)}")
        else:
            delivery = body["notifications"][0]["deliveries"][0]
            reason = f" ({delivery['reason']})" if delivery.get("reason") else ""
            messages.success(
                request,
                f"Test to {email}: {delivery['status']}{reason}. Request {body['request_id']}.",
            )
        return self._back_to(campaign)

    def preview_view(self, request, object_id):
        campaign, back = self._campaign_or_back(object_id)
        if campaign is None:
            return back
        if not self.has_view_permission(request, campaign):
            raise PermissionDenied
        steps = list(campaign.steps.order_by("position"))
        position = request.GET.get("step") or "1"
        step = next((s for s in steps if str(s.position) == position), steps[0] if steps else None)
        user_id = (request.GET.get("user_id") or "").strip()[:255]
        user = User.objects.filter(external_id=user_id).first() if user_id else None
        previews, error = [], ""
        if user_id and user is None:
            error = f"No user {user_id!r}."
        elif step is not None:
            previews, error = _render_step(campaign, step, user)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": campaign,
            "title": f"Preview of {campaign}",
            "campaign": campaign,
            "steps": steps,
            "step": step,
            "user_id": user_id,
            "recipient": user,
            "previews": previews,
            "error": error,
            "back_url": reverse("admin:campaigns_campaign_change", args=[campaign.pk]),
        }
        return TemplateResponse(request, "admin/campaigns/campaign/preview.html", context)


def _render_step(campaign: Campaign, step: CampaignStep, user: User | None):
    """The step rendered for ``user`` (None: the variables' examples) on each channel the
    campaign speaks: ``([{"channel", "fields"}], error)``."""
    channels = list(Channel.values) if campaign.channels == ["auto"] else list(campaign.channels)
    data = recipient_context(dict(campaign.data), user=user) if user else dict(campaign.data)
    if step.template_key:
        keys = template_keys(step.template_key, channels)
    else:
        keys = {channel: "" for channel in channels}
    if not keys:
        return (
            [],
            f"The family {step.template_key!r} has no active template for {', '.join(channels)}.",
        )
    out: list[dict[str, Any]] = []
    for channel, key in keys.items():
        locale = getattr(user, "locale", "") or ""
        zone = getattr(user, "timezone", "") or campaign.timezone
        try:
            if key:
                # Variables the recipient's data lacks come from the template's examples.
                fields = template_services.template_preview(
                    key=key, data=data, locale=locale or None, timezone=zone or None
                )
            else:
                fields = render(
                    channel=channel,
                    template_key="",
                    content=step.content,
                    data=data,
                    locale=locale,
                    timezone=zone,
                    recipient=getattr(user, "external_id", None),
                )
        except APIException as exc:
            return out, f"{channel}: {_error_text(exc)}"
        out.append({"channel": channel, "template": key, "fields": fields})
    return out, ""


def _delivery_statuses() -> list[Delivery.Status]:
    return list(Delivery.Status)


def _report_url(campaign: Campaign) -> str | None:
    try:
        return reverse("admin:analytics_campaign_report", args=[campaign.pk])
    except NoReverseMatch:
        return None


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
