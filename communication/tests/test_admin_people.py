"""The console's people list: a person is found by the exact username, user id, email address or
phone number, on the columns' indexes (a partial term finds nobody rather than reading every row)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from communication.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    staff = User.objects.create_superuser("people-admin", "people-admin@example.com", "pw")
    client.force_login(staff)
    return client


def found(client, term: str) -> list[str]:
    response = client.get("/admin/communication/user/", {"q": term})
    assert response.status_code == 200
    return sorted(row.username for row in response.context["cl"].result_list)


def test_people_are_found_by_an_exact_identifier(staff_client):
    User.objects.create(
        username="ada", external_id="u-ada", email="ada@example.com", phone="+33612345678"
    )
    User.objects.create(username="bob", external_id="u-bob", email="bob@example.com")
    for term in ("ada", "u-ada", "ada@example.com", "+33612345678", " ada@example.com "):
        assert found(staff_client, term) == ["ada"], term
    assert found(staff_client, "ada@") == []
    assert found(staff_client, "example.com") == []


def test_the_search_compares_the_column_itself_which_its_index_serves(staff_client):
    # Django's own "=field" search is iexact: UPPER(column), which no index serves.
    with CaptureQueriesContext(connection) as queries:
        found(staff_client, "ada@example.com")
    searches = [q["sql"] for q in queries if '"email"' in q["sql"] and "WHERE" in q["sql"]]
    assert searches and not any("UPPER(" in sql.upper() for sql in searches), searches
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM communication_user WHERE email = %s", ["ada@example.com"]
        )
        plan = " ".join(row[0] for row in cursor.fetchall())
    assert "user_email" in plan, plan
