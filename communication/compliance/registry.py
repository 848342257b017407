"""The one registry of personal data. Each app declares, in its ``compliance.py`` (imported by
its AppConfig.ready), every model, file and Redis key that holds something about a person, and
how to erase it. Erasure, export, retention and the report read only this registry.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import models


class Erase(enum.StrEnum):
    DELETE = "delete"  # the row goes
    ANONYMISE = "anonymise"  # the row stays (counts, structure); its personal fields are blanked
    TOMBSTONE = "tombstone"  # the row stays as a marker ("message deleted"); its content goes


@dataclass(frozen=True)
class Subject:
    """The person an erasure or export is about, as every table may know them."""

    users: tuple[uuid.UUID, ...] = ()  # local User primary keys
    user_ids: tuple[str, ...] = ()  # identity-service ids (User.external_id)
    emails: tuple[str, ...] = ()  # lower-cased
    phones: tuple[str, ...] = ()  # E.164


@dataclass(frozen=True)
class PersonalData:
    """One kind of personal data: the rows of ``model`` about a subject, and how they go.

    ``name`` ("<app>.<kind>") is the key of erasure reports and exports. ``fields`` maps each
    personal field to what anonymising or tombstoning writes (a value, or a callable of the
    row's primary key for values that must stay unique). ``retention`` names the
    ``RETENTION_DAYS`` kind whose clock runs from ``age_field``; expired rows are treated as
    ``expire`` says (the erase mode by default). ``files`` are storage-name fields whose files go
    with the row. ``eraser`` erases what is not rows (Redis keys, caches) and returns a count.
    ``expirer`` replaces row-by-row expiry for kinds with their own path (partitions dropped,
    the audit trail's anchored removal): it takes the cutoff and returns a count. ``export``
    lists the fields a person's export shows (None: not exported). Erasure runs entries by
    ``order`` (then registration): rows found through another table's personal fields go
    before that table is anonymised. A TOMBSTONE entry names its model's deleted marker in
    ``tombstone_field``.
    """

    name: str
    model: str  # "app_label.Model"
    rows: Callable[[Subject], models.Q] | None
    erase: Erase
    fields: Mapping[str, Any] = field(default_factory=dict)
    retention: str | None = None
    age_field: str = "created_at"
    expire: Erase | None = None
    files: tuple[str, ...] = ()
    storage: Callable[[], Any] | None = None  # the Django storage ``files`` live in
    export: tuple[str, ...] | None = None
    eraser: Callable[[Subject], int] | None = None
    # Extra values an exported row carries (a download link for a file the row holds only as a
    # storage name): a callable of the row (its ``export`` fields) and the person's user pk.
    export_links: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
    expirer: Callable[[Any], int] | None = None
    order: int = 100
    # TOMBSTONE: the model's datetime field that marks the row as erased (set to now unless
    # already set), e.g. Message.deleted_at.
    tombstone_field: str | None = None

    def __post_init__(self) -> None:
        if self.erase is Erase.TOMBSTONE and self.rows is not None and not self.tombstone_field:
            raise ValueError(f"{self.name}: a TOMBSTONE entry names its tombstone_field")

    @property
    def model_class(self) -> type[models.Model]:
        return apps.get_model(self.model)

    def queryset(self, subject: Subject) -> models.QuerySet:
        assert self.rows is not None
        return self.model_class._default_manager.filter(self.rows(subject))


_registry: dict[str, PersonalData] = {}


def register(*entries: PersonalData) -> None:
    """Declares personal data. Order matters: erasure runs entries in registration order, so an
    app registers rows that others point at after those pointing rows."""
    for entry in entries:
        if entry.name in _registry and _registry[entry.name] != entry:
            raise ValueError(f"personal data {entry.name!r} is declared twice")
        _registry[entry.name] = entry


def entries() -> list[PersonalData]:
    """Every declaration, in erasure order."""
    return sorted(_registry.values(), key=lambda entry: entry.order)


def get(name: str) -> PersonalData:
    return _registry[name]
