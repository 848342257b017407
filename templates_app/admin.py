"""Staff edit templates here: drafts with a live preview, a diff between versions, the review
actions (submit, approve, reject, make live, archive) and, per template, what is live in each
language. Every change goes through ``services``; the four-eyes rule applies to staff too.
"""

from __future__ import annotations

import difflib
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from rest_framework.exceptions import APIException
from unfold.admin import ModelAdmin, TabularInline

from communication.exceptions import ConflictError
from templates_app import selectors, services
from templates_app.models import (
    CHANNEL_FIELDS,
    Template,
    TemplateVariant,
    TemplateVersion,
    VersionStatus,
)

SOURCE_FIELDS = services.SOURCE_FIELDS


def _error_text(exc: APIException) -> str:
    fields = getattr(exc, "fields", None)
    text = str(exc.detail)
    if fields:
        text += " " + "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in fields.items())
    return text


class TemplateVariantInline(TabularInline):
    model = TemplateVariant
    extra = 0
    fields = ("key", "weight", "active", "description")


class TemplateVersionInline(TabularInline):
    model = TemplateVersion
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("number", "language", "variant", "status", "is_live", "created_by", "approved_by")
    readonly_fields = fields
    ordering = ("-number",)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Template)
class TemplateAdmin(ModelAdmin):
    list_display = ("key", "name", "channel", "category", "active", "live", "updated_at")
    list_filter = ("channel", "category", "active")
    search_fields = ("key", "name", "description")
    readonly_fields = ("live_overview", "created_by", "created_at", "updated_at")
    inlines = (TemplateVariantInline, TemplateVersionInline)
    fieldsets = (
        (None, {"fields": ("key", "name", "description", "category", "channel", "active")}),
        ("Languages and variables", {"fields": ("default_language", "variables")}),
        ("SMS", {"fields": ("sms_max_segments",)}),
        ("Live versions", {"fields": ("live_overview",)}),
        ("History", {"fields": ("created_by", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("category")
            .prefetch_related(selectors.live_versions_prefetch())
        )

    def changelist_view(self, request, extra_context=None):
        stats = services.cache_stats()
        extra_context = {
            "subtitle": (
                "Render caches in this process: live sources "
                f"{stats['sources']['hit_rate']:.0%} hits ({stats['sources']['hits']} of "
                f"{stats['sources']['hits'] + stats['sources']['misses']}), compiled templates "
                f"{stats['compiled']['hit_rate']:.0%} hits"
            ),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["key", "channel"]  # services render by key; versions are per channel
        return fields

    @admin.display(description="live")
    def live(self, obj: Template) -> str:
        versions = getattr(obj, "live_versions", [])
        return " · ".join(
            f"{v.language}{'/' + v.variant.key if v.variant_id else ''} v{v.number}"
            for v in versions
        )

    @admin.display(description="Live per language")
    def live_overview(self, obj: Template):
        if obj is None or obj.pk is None:
            return "-"
        rows = (
            TemplateVersion.objects.filter(template=obj, is_live=True)
            .select_related("variant")
            .order_by("language", "variant__key")
        )
        if not rows:
            return "Nothing is live yet: write a version, submit it and have it approved."
        return format_html(
            "<table><tr><th>Language</th><th>Variant</th><th>Version</th><th>Approved by</th>"
            "<th>Live since</th></tr>{}</table>",
            format_html_join(
                "",
                '<tr><td>{}</td><td>{}</td><td><a href="{}">v{}</a></td><td>{}</td>'
                "<td>{}</td></tr>",
                (
                    (
                        v.language,
                        v.variant.key if v.variant is not None else "—",
                        reverse("admin:templates_app_templateversion_change", args=[v.pk]),
                        v.number,
                        v.approved_by,
                        v.live_since.strftime("%Y-%m-%d %H:%M") if v.live_since else "",
                    )
                    for v in rows
                ),
            ),
        )

    def save_model(self, request, obj, form, change):
        services.template_save(template=obj, actor=request.user)

    def save_formset(self, request, form, formset, change):
        if formset.model is TemplateVariant:
            for variant in formset.save(commit=False):
                services.variant_save(variant=variant)
            for variant in formset.deleted_objects:
                try:
                    services.variant_delete(variant=variant)
                except ConflictError as exc:
                    messages.error(request, str(exc.detail))
            return
        formset.save()


class TemplateVersionForm(forms.ModelForm):
    class Meta:
        model = TemplateVersion
        fields = ("template", "variant", "language", *SOURCE_FIELDS, "note")
        widgets = {
            "html": forms.Textarea(
                attrs={"rows": 24, "cols": 90, "style": "font-family:monospace"}
            ),
            "text": forms.Textarea(attrs={"rows": 8, "cols": 90, "style": "font-family:monospace"}),
            "body": forms.Textarea(attrs={"rows": 6, "cols": 90, "style": "font-family:monospace"}),
        }

    def clean(self):
        super().clean()
        data = self.cleaned_data
        template = data.get("template") or getattr(self.instance, "template", None)
        if template is None:
            return data
        sources = {name: data.get(name) for name in SOURCE_FIELDS if name in data}
        try:
            services.version_check_sources(template.channel, sources)
        except APIException as exc:
            fields = getattr(exc, "fields", None) or {}
            field = getattr(exc, "field", None)
            if field in self.fields:
                raise ValidationError({field: str(exc.detail)}) from exc
            if fields:
                raise ValidationError(
                    {k if k in self.fields else NON_FIELD_ERRORS: v for k, v in fields.items()}
                ) from exc
            raise ValidationError(str(exc.detail)) from exc
        return data


@admin.register(TemplateVersion)
class TemplateVersionAdmin(ModelAdmin):
    form = TemplateVersionForm
    change_form_template = "admin/templates_app/templateversion/change_form.html"
    list_display = (
        "__str__",
        "template",
        "number",
        "language",
        "variant",
        "status",
        "is_live",
        "created_by",
        "approved_by",
        "updated_at",
    )
    list_filter = ("status", "is_live", "language", "template__channel")
    search_fields = ("template__key", "note")
    list_select_related = ("template", "variant")
    autocomplete_fields = ()
    actions = ("submit", "approve", "reject", "make_live", "archive")
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
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("template", "variant")

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is not None:
            fields += ["template", "variant", "language"]
            if obj.status != VersionStatus.DRAFT:
                fields += [*SOURCE_FIELDS, "note"]
        return fields

    def get_fieldsets(self, request, obj=None):
        sources: tuple[str, ...]
        if obj is None:
            sources = SOURCE_FIELDS
        else:
            required, optional = CHANNEL_FIELDS[obj.template.channel]
            sources = required + optional
        return (
            (None, {"fields": ("template", "variant", "language", "note")}),
            ("Content", {"fields": sources}),
            (
                "Review",
                {
                    "fields": (
                        "number",
                        "status",
                        "is_live",
                        "live_since",
                        "review_note",
                        ("created_by", "created_at"),
                        ("submitted_by", "submitted_at"),
                        ("approved_by", "approved_at"),
                        ("rejected_by", "rejected_at"),
                    )
                },
            ),
        )

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
            return
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

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        version = (
            TemplateVersion.objects.select_related("template", "variant")
            .filter(pk=object_id)
            .first()
        )
        if version is not None:
            extra_context.update(self._preview_context(version))
            extra_context["siblings"] = (
                TemplateVersion.objects.filter(template=version.template)
                .exclude(pk=version.pk)
                .order_by("-number")
                .only("id", "number", "language", "status", "is_live")[:30]
            )
            extra_context["transitions"] = self._transitions(version)
        return super().change_view(request, object_id, form_url, extra_context)

    def _preview_context(self, version: TemplateVersion) -> dict:
        try:
            rendered = services.template_preview(key=version.template.key, version_id=version.pk)
        except APIException as exc:
            return {"preview_error": _error_text(exc), "preview_channel": version.template.channel}
        return {"preview": rendered, "preview_channel": version.template.channel}

    @staticmethod
    def _transitions(version: TemplateVersion) -> list[tuple[str, str]]:
        if version.status == VersionStatus.DRAFT:
            return [("submit", "Submit for approval")]
        if version.status == VersionStatus.PENDING:
            return [("approve", "Approve and make live"), ("reject", "Reject")]
        if version.status == VersionStatus.APPROVED and not version.is_live:
            return [("make_live", "Make live again (roll back)"), ("archive", "Archive")]
        return []

    def diff_view(self, request, object_id):
        version = get_object_or_404(
            TemplateVersion.objects.select_related("template"), pk=object_id
        )
        if not self.has_view_permission(request, version):
            raise PermissionDenied
        others = TemplateVersion.objects.filter(template=version.template).exclude(pk=version.pk)
        against_id = request.GET.get("against")
        against = None
        if against_id:
            against = others.filter(pk=against_id).first()
        if against is None:
            against = (
                others.filter(language=version.language, is_live=True).first()
                or others.filter(language=version.language, number__lt=version.number)
                .order_by("-number")
                .first()
            )
        required, optional = CHANNEL_FIELDS[version.template.channel]
        tables = []
        if against is not None:
            differ = difflib.HtmlDiff(tabsize=2, wrapcolumn=80)
            for name in required + optional:
                old, new = getattr(against, name), getattr(version, name)
                if name == "data":
                    old, new = _json(old), _json(new)
                if old == new:
                    continue
                tables.append(
                    (
                        name,
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
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Changes in {version}",
            "version": version,
            "against": against,
            "others": others.order_by("-number").only("id", "number", "language", "status")[:50],
            "tables": tables,
        }
        return TemplateResponse(request, "admin/templates_app/templateversion/diff.html", context)

    def transition_view(self, request, object_id, action):
        version = get_object_or_404(TemplateVersion, pk=object_id)
        # The model-level change permission: the version itself may be read-only by now.
        if request.method != "POST" or not super().has_change_permission(request):
            raise PermissionDenied
        self._apply(request, action, [version], note=request.POST.get("note", ""))
        return HttpResponseRedirect(
            reverse("admin:templates_app_templateversion_change", args=[version.pk])
        )

    def _apply(self, request, action: str, versions, note: str = "") -> None:
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
                messages.success(request, f"{version}: {action.replace('_', ' ')} done.")

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


def _json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
