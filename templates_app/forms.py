"""Admin forms: a template's variables edited as rows, and a version's sources.

What a variable is stays defined once, by ``models.validate_variables`` (the API's serializer
calls it too): the rows here only turn text inputs into the JSON the field stores, and the
model's validation of that JSON decides what is valid.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from rest_framework.exceptions import APIException
from unfold.widgets import (
    UnfoldAdminSelectWidget,
    UnfoldAdminTextareaWidget,
    UnfoldAdminTextInputWidget,
    UnfoldBooleanWidget,
)

from templates_app import services
from templates_app.models import VARIABLE_TYPES, Template, TemplateVersion

# Row inputs beyond this are ignored: a posted count is not trusted to size a loop.
MAX_VARIABLES = 200
# Types whose example is written as it reads; the others (numbers, booleans, lists, objects) as
# JSON, so that ``42`` is a number and ``[1, 2]`` a list.
TEXT_TYPES = frozenset({"string", "url", "email", "date", "datetime"})
ROW_FIELDS = ("name", "type", "required", "example", "description")


class SubmittedRows(list):
    """Rows as posted (text values), told apart from the stored schema (a plain list)."""


def example_text(value: Any) -> str:
    """An example as the form shows it: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def example_value(kind: str, text: str) -> Any:
    """The example a row's text stands for; text that does not parse is kept as text, and the
    schema's validation then says what the type expects."""
    if kind in TEXT_TYPES:
        return text
    if kind == "number":
        # Kept as a string unless it is a whole number: a decimal string is exact ("41.00"),
        # a JSON float is not.
        return int(text) if text.lstrip("-").isdigit() else text
    try:
        return json.loads(text)
    except ValueError:
        return text


def rows_from_schema(schema: Any) -> list[dict[str, Any]]:
    if not isinstance(schema, list):
        return []
    rows = []
    for spec in schema:
        if not isinstance(spec, dict):
            continue
        rows.append(
            {
                "name": spec.get("name", ""),
                "type": spec.get("type", "string"),
                "required": spec.get("required", True),
                "example": example_text(spec["example"]) if "example" in spec else "",
                "description": spec.get("description", ""),
            }
        )
    return rows


def schema_from_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The variables a set of posted rows describes; blank and removed rows are dropped."""
    schema = []
    for row in rows:
        name = row["name"].strip()
        example = row["example"].strip()
        description = row["description"].strip()
        if row.get("delete") or not (name or example or description):
            continue
        kind = row["type"] or "string"
        spec: dict[str, Any] = {"name": name, "type": kind, "required": row["required"]}
        if example:
            spec["example"] = example_value(kind, example)
        if description:
            spec["description"] = description
        schema.append(spec)
    return schema


class VariablesWidget(forms.Widget):
    """A table of rows (name, type, required, example, description), one per variable, with a
    button that adds a row (``variables.js``) and a checkbox that removes one."""

    template_name = "admin/templates_app/template/variables_widget.html"
    blank_rows = 1

    class Media:
        js = ("templates_app/console/variables.js",)
        css = {"all": ("templates_app/console/templates.css",)}

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.inputs: dict[str, forms.Widget] = {
            "name": UnfoldAdminTextInputWidget(
                attrs={"placeholder": "first_name", "autocomplete": "off", "spellcheck": "false"}
            ),
            "type": UnfoldAdminSelectWidget(choices=[(t, t) for t in VARIABLE_TYPES]),
            "required": UnfoldBooleanWidget(),
            "example": UnfoldAdminTextareaWidget(attrs={"rows": 1, "class": "tpl-example"}),
            "description": UnfoldAdminTextInputWidget(),
            "delete": UnfoldBooleanWidget(),
        }

    def _row(self, name: str, index: int | str, row: dict[str, Any]) -> dict[str, Any]:
        return {
            field: widget.render(
                f"{name}-{index}-{field}",
                row.get(field),
                {"id": f"id_{name}-{index}-{field}", "aria-label": field},
            )
            for field, widget in self.inputs.items()
        }

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        rows = list(value or [])
        blank = {"name": "", "type": "string", "required": True, "example": "", "description": ""}
        rows += [blank] * self.blank_rows
        context["widget"].update(
            {
                "rows": [self._row(name, i, row) for i, row in enumerate(rows)],
                "empty_row": self._row(name, "__prefix__", blank),
                "total": len(rows),
                "total_name": f"{name}-TOTAL_FORMS",
            }
        )
        return context

    def value_from_datadict(self, data, files, name: str) -> SubmittedRows:
        try:
            total = min(int(data.get(f"{name}-TOTAL_FORMS", 0)), MAX_VARIABLES)
        except (TypeError, ValueError):
            total = 0
        rows = SubmittedRows()
        for i in range(total):
            prefix = f"{name}-{i}-"
            rows.append(
                {
                    "name": data.get(f"{prefix}name", ""),
                    "type": data.get(f"{prefix}type", "string"),
                    "required": f"{prefix}required" in data,
                    "example": data.get(f"{prefix}example", ""),
                    "description": data.get(f"{prefix}description", ""),
                    "delete": f"{prefix}delete" in data,
                }
            )
        return rows

    def value_omitted_from_data(self, data, files, name: str) -> bool:
        return f"{name}-TOTAL_FORMS" not in data


class VariablesField(forms.Field):
    """The ``variables`` JSON of a template, edited as rows (see ``VariablesWidget``)."""

    widget = VariablesWidget

    def prepare_value(self, value: Any) -> list[dict[str, Any]]:
        if isinstance(value, SubmittedRows):  # a form shown again with its errors
            return [row for row in value if not row.get("delete")]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return []
        return rows_from_schema(value)

    def to_python(self, value: Any) -> list[dict[str, Any]]:
        if isinstance(value, SubmittedRows):
            return schema_from_rows(value)
        return value or []

    def has_changed(self, initial: Any, data: Any) -> bool:
        return self.to_python(data) != (initial or [])


class TemplateForm(forms.ModelForm):
    variables = VariablesField(
        required=False,
        help_text=(
            "One row per variable the template uses. The examples fill the preview and test "
            "sends; write a list or an object example as JSON."
        ),
    )

    class Meta:
        model = Template
        fields = "__all__"


def _code(rows: int) -> UnfoldAdminTextareaWidget:
    return UnfoldAdminTextareaWidget(attrs={"rows": rows, "class": "tpl-code-input"})


class TemplateVersionForm(forms.ModelForm):
    class Meta:
        model = TemplateVersion
        fields = ("template", "variant", "language", *services.SOURCE_FIELDS, "note")
        widgets = {"html": _code(24), "text": _code(8), "body": _code(6), "data": _code(4)}

    def clean(self):
        super().clean()
        data = self.cleaned_data
        template = data.get("template") or getattr(self.instance, "template", None)
        if template is None:
            return data
        sources = {name: data.get(name) for name in services.SOURCE_FIELDS if name in data}
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
