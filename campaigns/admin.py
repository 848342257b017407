"""Segments in the staff console: rules edited as JSON, checked by the API's validator, and the
number of users they select shown on the segment's page."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from rest_framework.exceptions import ValidationError as DRFValidationError
from unfold.admin import ModelAdmin
from unfold.widgets import UnfoldAdminTextareaWidget

from campaigns import segments, selectors, services
from campaigns.models import Segment


class IndentedJSONField(forms.JSONField):
    """Shows the stored JSON indented, one rule a line, rather than on one long line."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class SegmentForm(forms.ModelForm):
    rules = IndentedJSONField(
        widget=UnfoldAdminTextareaWidget(attrs={"rows": 14, "class": "font-mono"}),
        help_text=(
            'A rule: {"all": [rule, …]}, {"any": [rule, …]}, {"not": rule} or '
            '{"field": …, "op": …, "value": …}. Fields: locale, timezone, organization, roles, '
            "created_at, attributes.&lt;key&gt;, event.&lt;type&gt;; operators: eq, in, "
            "contains, gt, lt, exists, within_days."
        ),
    )

    class Meta:
        model = Segment
        fields = ("name", "description", "rules")

    def clean_rules(self):
        rules = self.cleaned_data["rules"]
        try:
            segments.validate(rules)
        except DRFValidationError as exc:
            detail = exc.detail if isinstance(exc.detail, dict) else {"rules": exc.detail}
            raise forms.ValidationError(
                [
                    f"{'rules' if path == 'non_field_errors' else 'rules.' + path}: {message}"
                    for path, messages in detail.items()
                    for message in messages
                ]
            ) from None
        return rules


@admin.register(Segment)
class SegmentAdmin(ModelAdmin):
    form = SegmentForm
    list_display = ("name", "created_by", "created_at", "updated_at")
    search_fields = ("name", "description")
    readonly_fields = ("audience_count", "created_by", "created_at", "updated_at")
    fields = ("name", "description", "rules", "audience_count", "created_by", "created_at")

    @admin.display(description="users in the segment now")
    def audience_count(self, obj: Segment) -> str:
        if obj._state.adding:  # the id is set before the row exists (a default)
            return "—"
        try:
            return f"{selectors.segment_count(rules=obj.rules):,}"
        except DRFValidationError:  # rules stored before a stricter validator
            return "invalid rules: fix them to count"

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in ("name", "description", "rules")}
        if change:
            services.segment_update(segment=obj, **data)
            return
        created = services.segment_create(actor=request.user, **data)
        # The admin logs and redirects with ``obj``: give it the row the service made.
        obj.pk, obj.created_by = created.pk, created.created_by
        obj.created_at, obj.updated_at = created.created_at, created.updated_at
        obj._state.adding = False


# Campaigns, and static lists with their CSV import: modules of their own (pages, views, buttons).
from campaigns import admin_campaigns, admin_lists  # noqa: E402, F401
