"""CSV upload of static list members through django-import-export.

The file has a column ``user_id``, ``email`` or ``phone`` (each row fills exactly one of them);
every other column becomes a key of the member's ``data`` (empty cells are left out), and a column
named ``data`` may hold a JSON object, merged under those columns. Values are kept as text:
a cell starting with ``=`` is data like any other.

Rows are checked together by ``campaigns.services.lists`` before any is imported (one query for
the users named); each refused row is reported through import-export's own validation errors
(with its row number and a machine code), and the valid rows are written by
``lists.members_write`` (``COPY``, then one ``INSERT … ON CONFLICT``) per 10,000.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from import_export import fields, resources, widgets
from import_export.results import RowResult

from campaigns.models import StaticList, StaticListMember
from campaigns.services import lists
from campaigns.services.lists import Member, RowError

COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_COLUMNS = 50


def check_upload(raw: bytes) -> str | None:
    """Why an uploaded file cannot be imported (size, encoding, CSV syntax, columns, rows), or
    None. Cheap next to the import itself: the file is at most ``MAX_FILE_BYTES``."""
    if len(raw) > lists.MAX_FILE_BYTES:
        return f"The file is larger than {lists.MAX_FILE_BYTES // (1024 * 1024)} MB."
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "The file is not UTF-8 text: save it as “CSV UTF-8”."
    if "\x00" in text:  # PostgreSQL text cannot hold it
        return "The file holds NUL characters: it is not a CSV text file."
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        headers = next(reader, None)
        rows = sum(1 for _ in reader)
    except csv.Error as exc:
        return f"The file is not valid CSV: {exc}."
    if not headers:
        return "The file is empty."
    problem = check_headers(headers)
    if problem:
        return problem
    if rows > lists.MAX_ROWS:
        return f"The file has {rows:,} rows; at most {lists.MAX_ROWS:,} at once."
    return None


def check_headers(headers: list[str]) -> str | None:
    names = [h.strip() for h in headers]
    if len(names) > MAX_COLUMNS:
        return f"At most {MAX_COLUMNS} columns."
    bad = [n for n in names if not COLUMN.fullmatch(n)]
    if bad:
        return (
            f"Column names are letters, digits and '_' (not {bad[0][:40]!r}): they become the "
            "names of the member's data."
        )
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        return "Two columns have the same name."
    if not set(lowered) & set(lists.ADDRESS_FIELDS):
        return "The file needs a user_id, email or phone column."
    return None


def row_from_csv(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row as ``members_clean`` takes it: the address columns, and the others as data.

    An unreadable ``data`` cell is passed on as text, which ``members_clean`` refuses.
    """
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    data: Any = {}
    for column, value in row.items():
        name = (column or "").strip()
        lowered = name.lower()
        text = "" if value is None else str(value)
        if lowered in lists.ADDRESS_FIELDS:
            out[lowered] = text
        elif lowered == "data":
            if text.strip():
                try:
                    data = json.loads(text)
                except ValueError:
                    data = text
        elif text != "":
            extra[name] = text
    out["data"] = {**data, **extra} if isinstance(data, dict) else data
    return out


def _validation_error(error: RowError) -> ValidationError:
    where = NON_FIELD_ERRORS if error.field == "row" else error.field
    return ValidationError({where: [f"[{error.code}] {error.message}"]})


class StaticListMemberResource(resources.ModelResource):
    """Imports members into the one list given to it (``static_list``)."""

    # Declared for the page's list of columns and the preview's headers; rows are read by
    # ``before_import`` and ``import_instance``, not field by field.
    user_id = fields.Field(attribute="key", column_name="user_id")
    email = fields.Field(attribute="email", column_name="email")
    phone = fields.Field(attribute="phone", column_name="phone")
    data = fields.Field(attribute="data", column_name="data", widget=widgets.JSONWidget())

    class Meta:
        model = StaticListMember
        name = "Static list members (CSV)"
        fields = ("user_id", "email", "phone", "data")
        import_order = ("user_id", "email", "phone", "data")
        use_bulk = True
        batch_size = lists.WRITE_BATCH
        # Every row is checked in ``before_import`` (in bulk): no per-row look-up or full_clean.
        force_init_instance = True
        clean_model_instances = False
        # No deep copy and text diff per row (most of the time of a large file): a new member
        # has nothing to diff against; the preview shows the row as imported instead.
        skip_diff = True

    def __init__(self, static_list: StaticList | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.static_list = static_list
        self._cleaned: list[Member | RowError] = []
        self._existing: set[str] = set()

    def before_import(self, dataset, **kwargs):
        if self.static_list is None:
            raise ValidationError("Choose the list to import into.")
        headers = list(dataset.headers or [])
        rows = [row_from_csv(dict(zip(headers, values, strict=False))) for values in dataset]
        self._cleaned = lists.members_clean(rows)
        self._existing = lists.existing_keys(
            static_list=self.static_list,
            keys=[m.key for m in self._cleaned if isinstance(m, Member)],
        )

    def import_instance(self, instance, row, **kwargs):
        outcome = self._cleaned[kwargs["row_number"] - 1]
        if isinstance(outcome, RowError):
            raise _validation_error(outcome)
        instance.static_list = self.static_list
        instance.key = outcome.key
        instance.user_id = outcome.user_pk
        instance.email = outcome.email
        instance.phone = outcome.phone
        instance.data = outcome.data

    def after_import_row(self, row, row_result, **kwargs):
        outcome = self._cleaned[kwargs["row_number"] - 1]
        if isinstance(outcome, Member):
            if outcome.key in self._existing:
                row_result.import_type = RowResult.IMPORT_TYPE_UPDATE
            # The preview's cells, in the order of ``get_diff_headers``.
            row_result.diff = [
                outcome.key if outcome.user_pk is not None else "",
                outcome.email,
                outcome.phone,
                json.dumps(outcome.data, ensure_ascii=False) if outcome.data else "",
            ]

    def bulk_create(self, using_transactions, dry_run, raise_errors, batch_size=None, result=None):
        # Upserts (a key already in the list takes the new data), through the service's writer.
        # Not in the dry run: the rows were checked in ``before_import`` and nothing a write
        # could refuse is left to find, so writing to roll back would only double the time.
        if self.create_instances and not dry_run:
            try:
                lists.members_write(self.create_instances)
            except Exception as exc:  # import-export reports it on the page
                self.handle_import_error(result, exc, raise_errors)
            finally:
                self.create_instances.clear()

    def after_import(self, dataset, result, **kwargs):
        # Not the base class's sequence reset: ids come from the sequence already.
        return None
