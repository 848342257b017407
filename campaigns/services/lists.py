"""Static lists: explicit audiences of users or raw addresses, each member with its own data.

A member is a user (by ``user_id``, the identity's external id) or an address: an email
(lower-cased) or a phone number (E.164, normalised as single sends normalise it). Its ``key`` is
the user's external id or the keyed hash of that normalised address (:func:`address_key`; the
address itself is encrypted): one member per key in a list, and the key the campaign ledger uses.
Rows are checked all together (one query for the users they name) and written with set-based
inserts (``COPY`` of the encrypted values, then one ``INSERT … SELECT``); a row that names a
member already in the list replaces its data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import connection, transaction

from campaigns.models import StaticList, StaticListMember
from communication.audit import audit_record, field_changes
from communication.compliance.keyed import lookup_hash
from communication.fields import EncryptedField
from communication.models import User, normalize_e164
from templates_app.services.common import Actor, actor_of

logger = logging.getLogger(__name__)

MAX_ROWS = 100_000  # rows an upload may hold
MAX_FILE_BYTES = 10 * 1024 * 1024
WRITE_BATCH = 10_000  # rows of an import written at once
ADDRESS_FIELDS = ("user_id", "email", "phone")
MAX_DATA_BYTES = 16 * 1024  # a member's data, as JSON


@dataclass(frozen=True)
class Member:
    key: str
    user_pk: Any = None
    email: str = ""
    phone: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RowError:
    """Why a row was refused: ``field`` (``user_id``, ``email``, ``phone``, ``data`` or
    ``row``), a machine ``code`` and a sentence."""

    field: str
    code: str
    message: str


@dataclass
class AddResult:
    added: int = 0
    updated: int = 0
    errors: list[tuple[int, RowError]] = field(default_factory=list)


@transaction.atomic
def static_list_create(*, actor: Actor, name: str, description: str = "") -> StaticList:
    static_list = StaticList.objects.create(
        name=name, description=description, created_by=actor_of(actor)
    )
    audit_record(
        "static_list.create", "campaigns.staticlist", static_list.pk, actor=static_list.created_by
    )
    logger.info(
        "static list created",
        extra={"static_list": str(static_list.id), "actor": static_list.created_by},
    )
    return static_list


@transaction.atomic
def static_list_update(*, static_list: StaticList, **changes: Any) -> StaticList:
    """Changes a list's ``name`` and/or ``description``."""
    unknown = set(changes) - {"name", "description"}
    if unknown:
        raise TypeError(f"static_list_update() got unexpected fields {sorted(unknown)}")
    # As stored: the console's form has set the new values on ``static_list`` already.
    before = (
        StaticList.objects.filter(pk=static_list.pk).values(*changes).first() if changes else {}
    ) or {}
    for name, value in changes.items():
        setattr(static_list, name, value)
    static_list.save(update_fields=[*changes, "updated_at"])
    audit_record(
        "static_list.update",
        "campaigns.staticlist",
        static_list.pk,
        changes=field_changes(before, changes),
    )
    return static_list


@transaction.atomic
def static_list_delete(*, static_list: StaticList) -> None:
    audit_record("static_list.delete", "campaigns.staticlist", static_list.pk)
    static_list.delete()


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def members_clean(rows: Sequence[Mapping[str, Any]]) -> list[Member | RowError]:
    """One ``Member`` or ``RowError`` per row, in order.

    A row holds exactly one of ``user_id``, ``email``, ``phone`` (a string) and optionally
    ``data`` (an object). Users are looked up in one query (active users only); a row naming
    the same member as an earlier row is a ``duplicate``.
    """
    user_ids = {_text(row.get("user_id")) for row in rows} - {""}
    users = dict(
        _rows(
            f"SELECT external_id, id FROM {User._meta.db_table} "  # noqa: S608
            "WHERE is_active AND external_id = ANY(%s)",
            sorted(user_ids),
        )
    )
    seen: dict[str, int] = {}
    cleaned: list[Member | RowError] = []
    for number, row in enumerate(rows, 1):
        outcome = _clean_row(row, users)
        if isinstance(outcome, Member):
            first = seen.setdefault(outcome.key, number)
            if first != number:
                outcome = RowError("row", "duplicate", f"The same recipient as row {first}.")
        cleaned.append(outcome)
    return cleaned


def _clean_row(row: Mapping[str, Any], users: Mapping[str, Any]) -> Member | RowError:
    given = [name for name in ADDRESS_FIELDS if _text(row.get(name))]
    if not given:
        return RowError("row", "no_address", "Give one of user_id, email, phone.")
    if len(given) > 1:
        return RowError(
            "row", "ambiguous", f"Give only one of user_id, email, phone (not {', '.join(given)})."
        )
    data = row.get("data") or {}
    if not isinstance(data, dict):
        return RowError("data", "bad_data", "Must be a JSON object.")
    if len(json.dumps(data, ensure_ascii=False)) > MAX_DATA_BYTES:
        return RowError("data", "bad_data", f"At most {MAX_DATA_BYTES} characters of data.")
    (name,) = given
    value = _text(row.get(name))
    if name == "user_id":
        if value not in users:
            return RowError("user_id", "unknown_user", f"No user {value[:255]!r}.")
        return Member(key=value, user_pk=users[value], data=data)
    if name == "email":
        email = value.lower()
        try:
            if len(email) > 320:
                raise DjangoValidationError("too long")
            validate_email(email)
        except DjangoValidationError:
            return RowError("email", "bad_email", f"{value[:320]!r} is not an email address.")
        return Member(key=address_key(email), email=email, data=data)
    try:
        phone = normalize_e164(value[:64])
    except DjangoValidationError:
        return RowError(
            "phone",
            "bad_phone",
            f"{value[:64]!r} is not a phone number in international form (like +33612345678).",
        )
    return Member(key=address_key(phone), phone=phone, data=data)


def address_key(address: str) -> str:
    """The key of an address-only member (and of its ledger rows): the keyed hash of the
    normalised address, so that the key dedups without holding the address."""
    return lookup_hash(address)


def existing_keys(*, static_list: StaticList, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` are members of the list already (one query)."""
    table = StaticListMember._meta.db_table
    return {
        key
        for (key,) in _rows(
            f"SELECT key FROM {table} WHERE static_list_id = %s AND key = ANY(%s)",  # noqa: S608
            static_list.pk,
            list(keys),
        )
    }


def _rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    # ``= ANY(array)``: one parameter however many values (``IN`` takes one per value, and a
    # statement at most 65,535).
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def members_insert(*, static_list: StaticList, members: Iterable[Member]) -> int:
    """Writes ``members`` (distinct keys, as ``members_clean`` leaves them): new keys are added,
    keys already in the list take the new address and data. Returns how many were written."""
    return members_write(
        StaticListMember(
            static_list=static_list,
            key=member.key,
            user_id=member.user_pk,
            email=member.email,
            phone=member.phone,
            data=member.data,
        )
        for member in members
    )


def members_write(rows: Iterable[StaticListMember]) -> int:
    """The one writer of members: unsaved rows with distinct keys (checked by ``members_clean``),
    copied into a temporary table (``COPY``) and upserted on (list, key) with one
    ``INSERT … SELECT … ON CONFLICT`` — two statements whatever their number. The address and
    data are encrypted through their fields before the copy (the temporary table holds
    ciphertext only). The audit trail gets one entry per list written to, with the count only
    (never the members' addresses)."""
    table = StaticListMember._meta.db_table
    email, phone, data = (StaticListMember._meta.get_field(f) for f in ("email", "phone", "data"))
    assert isinstance(email, EncryptedField) and isinstance(phone, EncryptedField)
    assert isinstance(data, EncryptedField)
    written = 0
    per_list: dict[Any, int] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        # Created once per connection; emptied first, since a caller's transaction (a test's)
        # may never commit to clear it.
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS static_member_in (static_list_id uuid, "
            "key varchar(320), user_id uuid, email bytea, phone bytea, data bytea) "
            "ON COMMIT DELETE ROWS; TRUNCATE static_member_in"
        )
        with cursor.copy(
            "COPY static_member_in (static_list_id, key, user_id, email, phone, data) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(
                    (
                        row.static_list_id,
                        row.key,
                        row.user_id,
                        email.encrypted(row.email),
                        phone.encrypted(row.phone),
                        data.encrypted(row.data),
                    )
                )
                written += 1
                per_list[row.static_list_id] = per_list.get(row.static_list_id, 0) + 1
        if written:
            cursor.execute(
                f"INSERT INTO {table} (static_list_id, key, user_id, email, phone, data) "  # noqa: S608
                "SELECT static_list_id, key, user_id, email, phone, data FROM static_member_in "
                "ON CONFLICT (static_list_id, key) DO UPDATE SET user_id = EXCLUDED.user_id, "
                "email = EXCLUDED.email, phone = EXCLUDED.phone, data = EXCLUDED.data"
            )
        for list_id, count in per_list.items():
            audit_record(
                "static_list.add_members",
                "campaigns.staticlist",
                list_id,
                changes={"rows": count},
            )
    return written


def members_add(*, static_list: StaticList, rows: Sequence[Mapping[str, Any]]) -> AddResult:
    """Adds the valid rows to the list; returns the counts and each refused row (1-based)."""
    if len(rows) > MAX_ROWS:
        raise DjangoValidationError(f"At most {MAX_ROWS:,} rows at once.", code="too_many_rows")
    cleaned = members_clean(rows)
    members = [m for m in cleaned if isinstance(m, Member)]
    result = AddResult(errors=[(n, e) for n, e in enumerate(cleaned, 1) if isinstance(e, RowError)])
    with transaction.atomic():
        known = existing_keys(static_list=static_list, keys=[m.key for m in members])
        members_insert(static_list=static_list, members=members)
    result.updated = len(known)
    result.added = len(members) - len(known)
    logger.info(
        "static list members added",
        extra={
            "static_list": str(static_list.id),
            "added": result.added,
            "updated": result.updated,
            "refused": len(result.errors),
        },
    )
    return result
