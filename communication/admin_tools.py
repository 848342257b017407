"""What every page of the staff console may share: exact search on indexed columns, and pages
that are read but never written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import ValidationError
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
