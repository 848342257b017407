"""Templates: their settings, variables (edited as rows), A/B variants and what is live."""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from unfold.admin import ModelAdmin, TabularInline

from communication.exceptions import ConflictError
from templates_app import selectors, services
from templates_app.forms import TemplateForm
from templates_app.models import Channel, Template, TemplateVariant, TemplateVersion


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
    form = TemplateForm
    change_form_template = "admin/templates_app/template/change_form.html"
    list_display = ("key", "name", "channel", "category", "active", "live", "updated_at")
    list_filter = ("channel", "category", "active")
    # Substring search: the catalogue is a few hundred rows at most, which a scan reads at once.
    search_fields = ("key", "name", "description")
    readonly_fields = ("live_overview", "created_by", "created_at", "updated_at")
    inlines = (TemplateVariantInline, TemplateVersionInline)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("category")
            .prefetch_related(selectors.live_versions_prefetch())
        )

    def get_fieldsets(self, request, obj=None):
        fieldsets: list[tuple[str | None, dict]] = [
            (None, {"fields": ("key", "name", "description", "category", "channel", "active")}),
            ("Languages and variables", {"fields": ("default_language", "variables")}),
        ]
        if obj is None or obj.channel == Channel.SMS:
            fieldsets.append(("SMS", {"fields": ("sms_max_segments",)}))
        if obj is not None:
            # An unsaved template has no history yet (and its created_at is a database default).
            fieldsets += [
                ("Live versions", {"fields": ("live_overview",)}),
                ("History", {"fields": ("created_by", "created_at", "updated_at")}),
            ]
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["key", "channel"]  # services render by key; versions are per channel
        return fields

    def change_view(self, request, object_id, form_url="", extra_context=None):
        template = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if template is not None:
            extra_context["new_version_url"] = (
                reverse("admin:templates_app_templateversion_add")
                + f"?template={template.pk}&language={template.default_language}"
            )
            if request.user.has_perm("analytics.view_rollup"):
                extra_context["report_url"] = reverse(
                    "admin:analytics_template_report", args=[template.key]
                )
        return super().change_view(request, object_id, form_url, extra_context)

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
            return "—"
        rows = [
            [
                v.language,
                v.variant.key if v.variant is not None else "—",
                format_html(
                    '<a class="text-primary-600" href="{}">v{}</a>',
                    reverse("admin:templates_app_templateversion_change", args=[v.pk]),
                    v.number,
                ),
                v.approved_by,
                v.live_since.strftime("%Y-%m-%d %H:%M") if v.live_since else "",
            ]
            for v in selectors.template_live_versions(obj)
        ]
        if not rows:
            return "Nothing is live yet: write a version, submit it and have it approved."
        table = {
            "headers": ["Language", "Variant", "Version", "Approved by", "Live since"],
            "rows": rows,
        }
        return render_to_string("unfold/components/table.html", {"table": table})

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
