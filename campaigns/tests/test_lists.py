"""Static lists on real PostgreSQL: members normalised as single sends normalise recipients, rows
refused with a code (unknown user, bad email or phone, no address, duplicate), set-based writes
(query counts asserted), and the CSV checks (size, encoding, columns, rows) the upload runs."""

from __future__ import annotations

from typing import Any

import pytest
import tablib
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns import imports
from campaigns.imports import StaticListMemberResource, check_upload, row_from_csv
from campaigns.models import StaticList, StaticListMember
from campaigns.services import lists
from campaigns.services.lists import Member, RowError
from communication.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture
def static_list():
    return lists.static_list_create(actor="staff:ops", name="VIPs")


@pytest.fixture
def users():
    return [
        User.objects.create(username="ana", external_id="ana"),
        User.objects.create(username="ben", external_id="ben"),
        User.objects.create(username="old", external_id="old", is_active=False),
    ]


def test_rows_are_normalised_and_refused_with_codes(users):
    rows: list[dict[str, Any]] = [
        {"user_id": "ana", "data": {"tier": "gold"}},
        {"email": "  Ana.Smith@Example.COM "},
        {"phone": "+33 6 12 34 56 78"},
        {"user_id": "nobody"},
        {"user_id": "old"},  # inactive: not a recipient
        {"email": "not-an-email"},
        {"phone": "0612"},
        {},
        {"email": "x@example.com", "phone": "+33612345678"},
        {"email": "ana.smith@example.com"},  # the same recipient as row 2
        {"email": "y@example.com", "data": "[1]"},
    ]
    cleaned = lists.members_clean(rows)
    assert cleaned[:3] == [
        Member(key="ana", user_pk=users[0].pk, data={"tier": "gold"}),
        Member(key=lists.address_key("ana.smith@example.com"), email="ana.smith@example.com"),
        Member(key=lists.address_key("+33612345678"), phone="+33612345678"),
    ]
    codes = [(c.field, c.code) for c in cleaned[3:] if isinstance(c, RowError)]
    assert codes == [
        ("user_id", "unknown_user"),
        ("user_id", "unknown_user"),
        ("email", "bad_email"),
        ("phone", "bad_phone"),
        ("row", "no_address"),
        ("row", "ambiguous"),
        ("row", "duplicate"),
        ("data", "bad_data"),
    ]
    duplicate = cleaned[9]
    assert isinstance(duplicate, RowError) and "row 2" in duplicate.message


def test_users_are_looked_up_in_one_query(users):
    rows = [{"user_id": "ana"}, {"user_id": "ben"}, {"user_id": "x"}] * 50
    with CaptureQueriesContext(connection) as queries:
        lists.members_clean(rows)
    assert len(queries) == 1


def test_add_is_set_based_and_replaces_data_of_known_members(static_list, users):
    rows = [{"email": f"p{i}@example.com", "data": {"n": str(i)}} for i in range(2500)]
    rows.append({"user_id": "ana"})
    with CaptureQueriesContext(connection) as queries:
        result = lists.members_add(static_list=static_list, rows=rows)
    # The users, the keys already there, the staging table, the rows by COPY, one INSERT, and
    # the list's audit entry (a count, whatever the number of rows).
    statements = [q["sql"].split()[0] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert statements == ["SELECT", "SELECT", "CREATE", "COPY", "INSERT", "INSERT"], statements
    assert (
        "communication_auditentry"
        in [q for q in queries if q["sql"].startswith("INSERT")][-1]["sql"]
    )
    assert (result.added, result.updated, result.errors) == (2501, 0, [])
    assert static_list.members.count() == 2501
    ana = static_list.members.get(key="ana")
    assert ana.user_id == users[0].pk and ana.email == "" and ana.data == {}

    again = lists.members_add(
        static_list=static_list,
        rows=[{"email": "P1@example.com", "data": {"n": "new"}}, {"phone": "+33612345678"}],
    )
    assert (again.added, again.updated) == (1, 1)
    assert static_list.members.get(key=lists.address_key("p1@example.com")).data == {"n": "new"}
    assert static_list.members.count() == 2502


def test_too_many_rows_are_refused_whole(static_list):
    with pytest.raises(DjangoValidationError):
        lists.members_add(static_list=static_list, rows=[{}] * (lists.MAX_ROWS + 1))
    assert not StaticListMember.objects.exists()


def test_list_update_and_delete(static_list):
    lists.members_add(static_list=static_list, rows=[{"email": "a@example.com"}])
    lists.static_list_update(static_list=static_list, name="Gold")
    assert StaticList.objects.get().name == "Gold"
    with pytest.raises(TypeError):
        lists.static_list_update(static_list=static_list, created_by="x")
    lists.static_list_delete(static_list=static_list)
    assert not StaticListMember.objects.exists()


def test_csv_columns_become_data_and_formulas_stay_text():
    row = row_from_csv(
        {"Email": "a@example.com", "first_name": '=HYPERLINK("x")', "data": '{"a": 1}', "x": ""}
    )
    assert row == {"email": "a@example.com", "data": {"a": 1, "first_name": '=HYPERLINK("x")'}}
    assert row_from_csv({"email": "a@example.com", "data": "{oops"})["data"] == "{oops"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"email\n" + b"a@example.com\n" * 5, None),
        (b"\xef\xbb\xbfemail,name\na@example.com,Ana\n", None),  # a BOM is fine
        ("email,name\na@example.com,Zoë\n".encode("latin-1"), "not UTF-8"),
        (b"", "empty"),
        (b"name,city\nAna,Paris\n", "user_id, email or phone column"),
        (b"email,first name\n", "letters, digits"),
        (b"email,Email\n", "same name"),
        (b"email\n" + b"a@example.com\n" * (lists.MAX_ROWS + 1), "at most 100,000"),
        (b"email\n" + b"x" * (lists.MAX_FILE_BYTES + 1), "larger than 10 MB"),
        (b'email\n"a\x00b"\n', "NUL characters"),
        (b'email\n"a@example.com\n', "not valid CSV"),
    ],
)
def test_upload_checks(raw, problem):
    found = check_upload(raw)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_import_resource_reports_rows_and_upserts(static_list, users):
    dataset = tablib.Dataset(headers=["user_id", "email", "phone", "city"])
    dataset.append(["ana", "", "", "Paris"])
    dataset.append(["", "B@Example.com", "", ""])
    dataset.append(["ghost", "", "", ""])
    dataset.append(["", "", "12", ""])
    dataset.append(["", "b@example.com", "", ""])
    resource = StaticListMemberResource(static_list=static_list)
    preview = resource.import_data(dataset, dry_run=True)
    assert not preview.has_errors()
    refused = {row.number: row.error_dict for row in preview.invalid_rows}
    assert list(refused) == [3, 4, 5]
    assert "[unknown_user]" in refused[3]["user_id"][0]
    assert "[bad_phone]" in refused[4]["phone"][0]
    assert "[duplicate]" in refused[5]["__all__"][0] and "row 2" in refused[5]["__all__"][0]
    assert not StaticListMember.objects.exists()  # a dry run

    with CaptureQueriesContext(connection) as queries:
        done = StaticListMemberResource(static_list=static_list).import_data(dataset)
    inserts = [q["sql"] for q in queries if q["sql"].startswith("INSERT")]
    # The members in one statement, and the list's audit entry.
    assert len(inserts) == 2 and "communication_auditentry" in inserts[1], inserts
    assert done.totals["new"] == 2 and done.totals["invalid"] == 3
    members = {m.key: m for m in static_list.members.all()}
    assert set(members) == {"ana", lists.address_key("b@example.com")}
    assert members["ana"].data == {"city": "Paris"}

    again = StaticListMemberResource(static_list=static_list).import_data(dataset, dry_run=True)
    assert again.totals["update"] == 2 and again.totals["new"] == 0


def test_headers_rule_is_shared():
    assert imports.check_headers(["user_id", "plan"]) is None


def test_admin_import_refuses_a_huge_file_whole(admin_client, static_list):
    huge = SimpleUploadedFile(
        "huge.csv", b"email\n" + b"a@example.com\n" * (lists.MAX_FILE_BYTES // 14 + 10)
    )
    response = admin_client.post(
        "/admin/campaigns/staticlistmember/import/",
        {"static_list": str(static_list.pk), "import_file": huge, "format": "0"},
    )
    assert response.status_code == 200
    assert "larger than 10 MB" in response.content.decode()
    assert not StaticListMember.objects.exists()


def test_admin_import_needs_the_permission_to_add_members(client, static_list):
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/campaigns/staticlistmember/import/").status_code == 403
