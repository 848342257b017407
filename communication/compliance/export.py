"""Access and portability: everything held about a person, as one JSON document.

The document is built from the registry (each entry's ``export`` fields, over its ``rows``) and
written as it is read: one key per app, one list per kind, rows read by server-side chunks, so
that a person with years of messages never sits whole in memory. Attachments come as signed
download links made for the person themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from communication.audit import audit_record
from communication.compliance import erasure, registry
from communication.compliance.registry import PersonalData, Subject
from communication.models import User

ACTION = "compliance.export"
CHUNK_ROWS = 500
# Bytes gathered before a chunk goes out: fewer, larger writes than one per row.
FLUSH_BYTES = 64 * 1024


class UnknownSubjectError(LookupError):
    pass


def export_user(user_id: str) -> User:
    """The local user whose identity-service id is ``user_id``. Raises UnknownSubjectError: a
    person never seen here has nothing held about them."""
    user = User.objects.filter(external_id=user_id).first() if user_id else None
    if user is None:
        raise UnknownSubjectError(user_id)
    return user


def export_open(user: User) -> Iterator[str]:
    """Records the export (one ``compliance.export`` audit entry) and returns its document as
    an iterator of JSON text chunks, read as they are written (what a streamed response
    consumes: the server's WSGI bridge sends each chunk as it comes)."""
    audit_record(ACTION, "communication.user", user.external_id or user.pk)
    return _document(user, erasure.subject_resolve(user_id=user.external_id))


def _apps() -> dict[str, list[PersonalData]]:
    apps: dict[str, list[PersonalData]] = {}
    for entry in registry.entries():
        app, _ = entry.name.split(".", 1)
        kinds = apps.setdefault(app, [])
        if entry.export is not None and entry.rows is not None:
            kinds.append(entry)
    return apps


def _dump(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)


def _document(user: User, subject: Subject) -> Iterator[str]:
    out = [
        "{",
        f'"user_id": {_dump(user.external_id)}, ',
        f'"generated_at": {_dump(timezone.now())}',
    ]
    size = 0
    for app, entries in _apps().items():
        out.append(f", {_dump(app)}: {{")
        for index, entry in enumerate(entries):
            kind = entry.name.split(".", 1)[1]
            out.append(f"{', ' if index else ''}{_dump(kind)}: [")
            links = entry.export_links
            assert entry.export is not None
            rows = entry.queryset(subject).order_by("pk").values(*entry.export)
            first = True
            for row in rows.iterator(chunk_size=CHUNK_ROWS):
                text = ("" if first else ", ") + _dump(
                    row if links is None else row | links(row, user.pk)
                )
                out.append(text)
                size += len(text)
                first = False
                if size >= FLUSH_BYTES:
                    yield "".join(out)
                    out, size = [], 0
            out.append("]")
        out.append("}")
    out.append("}")
    yield "".join(out)
