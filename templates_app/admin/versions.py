"""Template versions: the source beside its preview, a diff between two versions, and the review
buttons.

The buttons on a version's page are ``formaction`` buttons of the change form (a ``<form>``
inside it would be invalid HTML: the browser would submit the outer form), except "Save and
submit for approval", which is an unfold submit-line action: it saves the draft's edits first.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from rest_framework.exceptions import APIException
from unfold.admin import ModelAdmin
from unfold.decorators import action, display

from communication.exceptions import NotFoundError
from templates_app import selectors, services
from templates_app.forms import TemplateVersionForm
from templates_app.models import CHANNEL_FIELDS, Template, TemplateVersion, VersionStatus

SOURCE_FIELDS = services.SOURCE_FIELDS

# What each review action did, for the message shown after it.
DONE = {
    "submit": "submitted for approval",
    "approve": "approved: it is live now",
    "reject": "sent back to draft",
    "make_live": "live again",
    "archive": "archived",
}
# The staff member's note for approve and reject (not ``note``: a draft's form has that field).
NOTE_FIELD = "review_note_input"
# A version page links to the notifications app's send-test page (when that app is installed).
SEND_TEST_URL_NAME = "admin:notifications_send_test"


def _error_text(exc: APIException) -> str:
    fields = getattr(exc, "fields", None)
    text = str(exc.detail)
    if fields:
        text += " " + "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in fields.items())
    return text


def _json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class ReviewButton:
    action: str
    label: str
    url: str
    variant: str = "default"
    refusal: str | None = None  # why this person may not (the button is then disabled)


def _label(name: str) -> str:
    """A source field's label ("HTML body", "Deep link")."""
    return capfirst(str(getattr(TemplateVersion._meta.get_field(name), "verbose_name", name)))


def _source_display(name: str):
    """A read-only source field as code (whitespace kept), for versions past draft."""

    @admin.display(description=_label(name))
    def show(self, obj: TemplateVersion):
        value = getattr(obj, name)
        if name == "data":
            if not value:
                return "—"
            return format_html(
                '<dl class="tpl-data">{}</dl>',
                format_html_join(
                    "", "<dt>{}</dt><dd><pre class='tpl-code'>{}</pre></dd>", value.items()
                ),
            )
        if not value:
            return "—"
        return format_html('<pre class="tpl-code">{}</pre>', value)

    return show


@admin.register(TemplateVersion)
class TemplateVersionAdmin(ModelAdmin):
    form = TemplateVersionForm
    change_form_template = "admin/templates_app/templateversion/change_form.html"
    # Labels above the fields: the source gets the whole width of its column.
    compressed_fields = False
    list_display = (
        "__str__",
        "status_label",
        "is_live",
        "created_by",
        "submitted_by",
        "approved_by",
        "updated_at",
    )
    list_filter = ("status", "is_live", "language", "template__channel")
    # Exact, on the template's unique key (an index): the version table grows with every edit.
    search_fields = ("=template__key",)
    list_select_related = ("template", "variant")
    actions = ("submit", "approve", "reject", "make_live", "archive")
    actions_submit_line = ("submit_for_approval",)
    readonly_fields = (
        "number",
        "status",
        "is_live",
        "live_since",
        "review_note",
        "created_by",
        "created_at",
        "submitted_by",
        "submitted_at",
        "approved_by",
        "approved_at",
        "rejected_by",
        "rejected_at",
        *(f"{name}_source" for name in SOURCE_FIELDS),
    )

    subject_source = _source_display("subject")
    html_source = _source_display("html")
    text_source = _source_display("text")
    title_source = _source_display("title")
    body_source = _source_display("body")
    data_source = _source_display("data")
    image_source = _source_display("image")
    deep_link_source = _source_display("deep_link")
    action_url_source = _source_display("action_url")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("template", "variant")

    @display(
        description="status",
        ordering="status",
        label={
            VersionStatus.DRAFT.label: "primary",
            VersionStatus.PENDING.label: "warning",
            VersionStatus.APPROVED.label: "info",
        },
    )
    def status_label(self, obj: TemplateVersion) -> str:
        return obj.get_status_display()

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is not None:
            fields += ["template", "variant", "language"]
            if obj.status != VersionStatus.DRAFT:
                fields += ["note"]
        return fields

    def _template_from_query(self, request) -> Template | None:
        """The template an add form was opened for (``?template=``): it decides the fields."""
        template_id = request.GET.get("template")
        if not template_id:
            return None
        try:
            return Template.objects.filter(pk=template_id).first()
        except ValidationError:  # not a UUID
            return None

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            template = self._template_from_query(request)
            if template is None:
                return (
                    (None, {"fields": ("template", "variant", "language", "note")}),
                    (
                        "Content",
                        {
                            "fields": SOURCE_FIELDS,
                            "description": "Fill in the fields of the template's channel: "
                            "email: subject and HTML body (text is made from the HTML when "
                            "blank); SMS: text; push: title, body and optional data, image "
                            "and deep link; in-app: title, body and optional action URL; chat: "
                            "body.",
                        },
                    ),
                )
            required, optional = CHANNEL_FIELDS[template.channel]
            return (
                (None, {"fields": ("template", "variant", "language", "note")}),
                ("Content", {"fields": required + optional}),
            )
        required, optional = CHANNEL_FIELDS[obj.template.channel]
        sources = required + optional
        if obj.status != VersionStatus.DRAFT:
            sources = tuple(f"{name}_source" for name in sources)
        # Number, status and reviewers are shown in the review panel beside the form.
        return (
            (None, {"fields": ("template", "variant", "language", "note")}),
            ("Content", {"fields": sources}),
        )

    def get_changeform_initial_data(self, request):
        """``?from=<version>`` starts a draft from that version's sources (the page's "New
        draft from this version")."""
        initial = super().get_changeform_initial_data(request)
        source_id = initial.pop("from", None)
        if source_id:
            try:
                source = selectors.version_get(source_id)
            except NotFoundError:
                return initial
            initial.update(
                template=source.template_id,
                variant=source.variant_id,
                language=source.language,
                **source.source_fields(source.template.channel),
            )
            if "data" in initial:
                initial["data"] = _json(initial["data"])
        return initial

    def has_delete_permission(self, request, obj=None):
        # History is kept: a draft may go, anything reviewed stays.
        if obj is not None and obj.status != VersionStatus.DRAFT:
            return False
        return super().has_delete_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        # Past draft a version is immutable: its page is read-only (review buttons excepted).
        if obj is not None and obj.status != VersionStatus.DRAFT:
            return False
        return super().has_change_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Bulk deletion would skip the per-version rule above.
        actions.pop("delete_selected", None)
        return actions

    def get_actions_submit_line(self, request, object_id):
        # Only a draft (or a version being written) can be submitted, by someone who may edit.
        if not super().has_change_permission(request):
            return []
        if object_id is not None:
            version = TemplateVersion.objects.filter(pk=object_id).only("status").first()
            if version is None or version.status != VersionStatus.DRAFT:
                return []
        return super().get_actions_submit_line(request, object_id)

    def save_model(self, request, obj, form, change):
        sources = {
            name: form.cleaned_data[name] for name in SOURCE_FIELDS if name in form.cleaned_data
        }
        if change:
            services.version_update(
                version=obj,
                actor=request.user,
                note=form.cleaned_data.get("note", obj.note),
                **sources,
            )
        else:
            version = services.version_create(
                template=obj.template,
                actor=request.user,
                language=obj.language,
                variant=obj.variant,
                note=obj.note,
                **sources,
            )
            # The admin goes on with ``obj`` (messages, log, redirect): make it the saved row.
            obj.pk = version.pk
            obj.number = version.number
            obj.created_by = version.created_by
            obj._state.adding = False
        # unfold's ModelAdmin.save_model, which this one replaces, runs the submit-line button
        # that was pressed once the object is saved: so does this.
        for line_action in self.get_actions_submit_line(request, obj.pk):
            if line_action.action_name in request.POST:
                line_action.method(request, obj)

    def _submit_line_pressed(self, request) -> bool:
        return any(a.action_name in request.POST for a in self._get_base_actions_submit_line())

    def response_add(self, request, obj, post_url_continue=None):
        if self._submit_line_pressed(request):
            return self._back_to(obj)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        if self._submit_line_pressed(request):
            return self._back_to(obj)
        return super().response_change(request, obj)

    @staticmethod
    def _back_to(version: TemplateVersion) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse("admin:templates_app_templateversion_change", args=[version.pk])
        )

    @action(description="Save and submit for approval", icon="send")
    def submit_for_approval(self, request, obj: TemplateVersion):
        self._apply(request, "submit", [obj], done="saved and submitted for approval")

    # ------------------------------------------------------------------ preview, diff, review

    def get_urls(self):
        urls = super().get_urls()
        return [
            path(
                "<uuid:object_id>/diff/",
                self.admin_site.admin_view(self.diff_view),
                name="templates_app_templateversion_diff",
            ),
            path(
                "<uuid:object_id>/transition/<str:action>/",
                self.admin_site.admin_view(self.transition_view),
                name="templates_app_templateversion_transition",
            ),
            *urls,
        ]

    def add_view(self, request, form_url="", extra_context=None):
        extra_context = extra_context or {}
        template = self._template_from_query(request)
        extra_context.update(
            title=f"New version of {template.key}" if template else "New template version",
            # unfold fills the submit line of change pages only.
            actions_submit_line=self.get_actions_submit_line(request, None),
        )
        return super().add_view(request, form_url, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        try:
            version = selectors.version_get(object_id)
        except NotFoundError:
            version = None  # the admin answers as it does for a missing object
        if version is not None:
            extra_context.update(self._preview_context(version))
            extra_context.update(
                # The page's title (unfold puts a subtitle before it: the title says it all).
                title=f"{version} · {version.get_status_display()}"
                + (" · live" if version.is_live else ""),
                subtitle=None,
                others=selectors.version_others(version, limit=30),
                review_buttons=self._review_buttons(request, version),
                review_note_field=NOTE_FIELD,
                diff_url=reverse("admin:templates_app_templateversion_diff", args=[version.pk]),
                new_draft_url=reverse("admin:templates_app_templateversion_add")
                + "?"
                + urlencode({"template": version.template_id, "from": version.pk}),
                send_test_url=self._send_test_url(version),
            )
        return super().change_view(request, object_id, form_url, extra_context)

    @staticmethod
    def _send_test_url(version: TemplateVersion) -> str | None:
        try:
            url = reverse(SEND_TEST_URL_NAME)
        except NoReverseMatch:  # the notifications app's page is not installed
            return None
        return f"{url}?{urlencode({'template_version': version.pk})}"

    def _preview_context(self, version: TemplateVersion) -> dict:
        try:
            rendered = services.template_preview(key=version.template.key, version_id=version.pk)
        except APIException as exc:
            return {"preview_error": _error_text(exc), "preview_channel": version.template.channel}
        return {"preview": rendered, "preview_channel": version.template.channel}

    def _review_buttons(self, request, version: TemplateVersion) -> list[ReviewButton]:
        """The review actions that apply to ``version`` now (submitting a draft is the submit
        line's "Save and submit for approval")."""

        def button(action_name: str, label: str, **kwargs) -> ReviewButton:
            url = reverse(
                "admin:templates_app_templateversion_transition", args=[version.pk, action_name]
            )
            return ReviewButton(action_name, label, url, **kwargs)

        if version.status == VersionStatus.PENDING:
            refusal = services.version_approval_refusal(version=version, actor=request.user)
            return [
                button("approve", "Approve and make live", variant="primary", refusal=refusal),
                button("reject", "Reject (back to draft)", variant="danger"),
            ]
        if version.status == VersionStatus.APPROVED and not version.is_live:
            return [
                button("make_live", "Make live again (roll back)", variant="primary"),
                button("archive", "Archive"),
            ]
        return []

    def diff_view(self, request, object_id):
        try:
            version = selectors.version_get(object_id)
        except NotFoundError:
            return HttpResponseRedirect(reverse("admin:templates_app_templateversion_changelist"))
        if not self.has_view_permission(request, version):
            raise PermissionDenied
        against = selectors.version_diff_base(version, request.GET.get("against"))
        required, optional = CHANNEL_FIELDS[version.template.channel]
        tables = []
        if against is not None:
            # Lines wrap at 60 columns so that two sides fit the page beside the sidebar.
            differ = difflib.HtmlDiff(tabsize=2, wrapcolumn=60)
            for name in required + optional:
                old, new = getattr(against, name), getattr(version, name)
                if name == "data":
                    old, new = _json(old), _json(new)
                if old == new:
                    continue
                tables.append(
                    (
                        _label(name),
                        differ.make_table(
                            old.splitlines(),
                            new.splitlines(),
                            f"v{against.number} ({against.language})",
                            f"v{version.number} ({version.language})",
                            context=True,
                            numlines=3,
                        ),
                    )
                )
        title = f"Changes in {version}"
        if against is not None:
            title += f" since v{against.number} [{against.language}]"
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": version,  # unfold's header names the version in its breadcrumbs
            "title": title,
            "version": version,
            "against": against,
            "others": selectors.version_others(version),
            "tables": tables,
        }
        return TemplateResponse(request, "admin/templates_app/templateversion/diff.html", context)

    def transition_view(self, request, object_id, action):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            version = selectors.version_get(object_id)
        except NotFoundError:
            return HttpResponseRedirect(reverse("admin:templates_app_templateversion_changelist"))
        # The model-level change permission: the version itself may be read-only by now.
        if action not in DONE or not super().has_change_permission(request):
            raise PermissionDenied
        self._apply(request, action, [version], note=request.POST.get(NOTE_FIELD, ""))
        return self._back_to(version)

    def _apply(self, request, action: str, versions, note: str = "", done: str = "") -> None:
        for version in versions:
            try:
                if action == "submit":
                    services.version_submit(version=version, actor=request.user)
                elif action == "approve":
                    services.version_approve(version=version, actor=request.user, note=note)
                elif action == "reject":
                    services.version_reject(version=version, actor=request.user, note=note)
                elif action == "make_live":
                    services.template_rollback(
                        template=version.template, version_id=version.pk, actor=request.user
                    )
                elif action == "archive":
                    services.version_archive(version=version, actor=request.user)
                else:
                    raise PermissionDenied
            except APIException as exc:
                messages.error(request, f"{version}: {_error_text(exc)}")
            else:
                messages.success(request, f"{version}: {done or DONE[action]}.")

    @admin.action(description="Submit for approval")
    def submit(self, request, queryset):
        self._apply(request, "submit", queryset.select_related("template"))

    @admin.action(description="Approve (and make live)")
    def approve(self, request, queryset):
        self._apply(request, "approve", queryset.select_related("template"))

    @admin.action(description="Reject (back to draft)")
    def reject(self, request, queryset):
        self._apply(request, "reject", queryset.select_related("template"))

    @admin.action(description="Make live again (roll back)")
    def make_live(self, request, queryset):
        self._apply(request, "make_live", queryset.select_related("template"))

    @admin.action(description="Archive")
    def archive(self, request, queryset):
        self._apply(request, "archive", queryset.select_related("template"))
