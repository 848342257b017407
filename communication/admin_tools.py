"""What every page of the staff console may share: exact search on indexed columns, pages
that are read but never written, and the audit entry of every change made in the console."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, ClassVar

from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest


class ExactSearchMixin:
    """Search by the whole term, exactly, in each of ``search_fields`` (paths, no prefix).

    Django's ``=field`` search is ``iexact``, which PostgreSQL runs as ``UPPER(col::text) =
    UPPER(%s)``: no index serves it, so each search would read the whole table. Here the term is
    converted by each field first (a term that is no valid value of a field, such as a name for
    a UUID, is not looked up there) and each field is its own indexed query of primary keys,
    united, rather than one ``OR`` across joins that no index can serve.
    """

    model: type[Model]
    search_fields: ClassVar[Sequence[str]]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        found: QuerySet[Any] | None = None
        for path in self.search_fields:
            field = get_fields_from_path(self.model, path)[-1]
            try:
                value = field.clean(term, None)
            except ValidationError:
                continue
            pks = self.model._default_manager.filter(**{path: value}).values("pk")
            found = pks if found is None else found.union(pks, all=True)
        if found is None:
            return queryset.none(), False
        return queryset.filter(pk__in=found), False


class ReadOnlyMixin:
    """A record staff read but never change here: no Save, Add or Delete button (a raw write
    would skip the services, their events and the tombstones)."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# ------------------------------------------------------------------------------- audit trail
#
# Every add, change and delete made in the console is recorded through one path: the admin's own
# LogEntry, written by ModelAdmin.log_addition/log_change/log_deletions for every form and the
# bulk delete. An entry keeps the model, the object's id and the names of the changed fields,
# never the LogEntry's object_repr, which can hold a name or an address.

_ADMIN_VERBS = {1: "add", 2: "change", 3: "delete"}  # LogEntry's ADDITION, CHANGE, DELETION
# Set while the audited bulk delete runs: it writes its own entries, one per object.
_in_bulk_delete: ContextVar[bool] = ContextVar("admin_bulk_delete", default=False)


def admin_change_summary(change_message: str) -> dict[str, Any]:
    """The field names of a LogEntry's change message; the reprs of inline objects it names
    (``"object"``) are left out."""
    try:
        parts = json.loads(change_message) if change_message else []
    except ValueError:
        return {}
    if not isinstance(parts, list):
        return {}
    fields: list[str] = []
    inlines: list[str] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        for verb, raw in part.items():
            detail = raw if isinstance(raw, dict) else {}
            names = [f for f in detail.get("fields", []) if isinstance(f, str)]
            if "name" in detail:
                inline = f"{verb} {detail['name']}"
                inlines.append(f"{inline}: {', '.join(names)}" if names else inline)
            else:
                fields += names
    summary: dict[str, Any] = {}
    if fields:
        summary["fields"] = sorted(set(fields))
    if inlines:
        summary["inlines"] = inlines
    return summary


def _audit_admin(verb: str, object_type: str, object_id: str, changes: dict[str, Any]) -> None:
    from communication.audit import audit_record  # noqa: PLC0415  (apps load before models)
    from communication.logging import request_id_var  # noqa: PLC0415
    from communication.models import AuditEntry  # noqa: PLC0415

    # A change made through a service (a segment saved, a suppression added) was recorded by the
    # service in this request already: one entry per change, the service's, which says more.
    request_id = request_id_var.get()
    if (
        verb != "delete"
        and request_id != "-"
        and AuditEntry.objects.filter(
            object_type=object_type, object_id=object_id, request_id=request_id
        ).exists()
    ):
        return
    audit_record(f"admin.{verb}", object_type, object_id, changes=changes)


def audit_log_entry(
    sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    """``post_save`` of ``admin.LogEntry``: one audit entry for the console's add or change."""
    if not created or raw or _in_bulk_delete.get():
        return
    verb = _ADMIN_VERBS.get(instance.action_flag)
    if verb is None:
        return
    content_type = instance.content_type
    object_type = (
        f"{content_type.app_label}.{content_type.model}" if content_type else "admin.unknown"
    )
    _audit_admin(
        verb, object_type, instance.object_id or "", admin_change_summary(instance.change_message)
    )


def audited_delete_selected(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
    """Django's bulk delete, with an entry for each object it deleted: its log of several objects
    is one ``bulk_create``, which sends no ``post_save``."""
    from django.contrib.admin.actions import delete_selected  # noqa: PLC0415

    opts = modeladmin.model._meta
    object_type = f"{opts.app_label}.{opts.model_name}"
    token = _in_bulk_delete.set(True)
    try:
        with transaction.atomic():
            pks = [str(pk) for pk in queryset.values_list("pk", flat=True)]
            response = delete_selected(modeladmin, request, queryset)
            # None: deleted (the confirmation page is a response).
            if response is None:
                for pk in pks:
                    _audit_admin("delete", object_type, pk, {})
    finally:
        _in_bulk_delete.reset(token)
    return response


def audited_delete_selected_setup() -> None:
    """Puts the audited bulk delete in place of Django's on the site (``apps.ready``)."""
    from django.contrib import admin  # noqa: PLC0415
    from django.contrib.admin.actions import delete_selected  # noqa: PLC0415

    functools.update_wrapper(audited_delete_selected, delete_selected)
    admin.site.add_action(audited_delete_selected, "delete_selected")
