"""Static lists in the staff console, clicked through in Chromium: a staff member creates a list
from the sidebar, follows "Import members from CSV" on its page, uploads a file with good and bad
rows, reads each refused row with its number and code, confirms, and finds the valid members in
the list (a non-UTF-8 file is refused with a sentence saying so).

Skips, saying why, where Debian's chromium or Playwright is missing.
"""

from __future__ import annotations

import pytest

from campaigns.models import StaticList
from campaigns.services import lists
from communication.models import User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

GOOD_AND_BAD = (
    "user_id,email,phone,first_name\n"
    "ana,,,Ana\n"  # 1: a user
    ",Ben@Example.COM,,Ben\n"  # 2: an address, lower-cased
    ",,+33 6 12 34 56 78,=SUM(A1:A2)\n"  # 3: a phone, to E.164; a formula is data
    "ghost,,,\n"  # 4: unknown user
    ",not-an-email,,\n"  # 5: bad email
    ",,0000,\n"  # 6: bad phone
    ",,,Nobody\n"  # 7: no address
    ",ben@example.com,,Again\n"  # 8: duplicate of row 2
)


def test_upload_see_row_errors_confirm(live_asgi, tmp_path):
    User.objects.create_superuser("list-admin", "list-admin@example.com", STAFF_PASSWORD)
    ana = User.objects.create(username="ana", external_id="ana")
    good = tmp_path / "members.csv"
    good.write_text(GOOD_AND_BAD, encoding="utf-8")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("email,name\nzoe@example.com,Zoë\n".encode("latin-1"))

    with chromium() as browser:
        staff = StaffBrowser(browser, live_asgi.url, "list-admin")
        page = staff.page
        staff.goto("/admin/")
        with page.expect_navigation():
            page.locator(
                'a[href="/admin/campaigns/staticlist/"]', has_text="Static lists"
            ).first.click()
        staff.goto("/admin/campaigns/staticlist/add/")
        page.fill("#id_name", "Launch guests")
        with page.expect_navigation():
            page.click("button[name=_continue]")
        assert "/change/" in page.url, page.url
        with page.expect_navigation():
            page.click("#import-members")
        assert "/admin/campaigns/staticlistmember/import/" in page.url, page.url

        # A file that is not UTF-8 is refused with a sentence, before any row is read.
        page.set_input_files("#id_import_file", str(latin))
        with page.expect_navigation():
            page.click("form[enctype] button[type=submit]")
        assert "not UTF-8" in page.locator("#content").inner_text()

        page.set_input_files("#id_import_file", str(good))
        with page.expect_navigation():
            page.click("form[enctype] button[type=submit]")
        shown = page.locator("#content").inner_text()
        assert "5 rows have errors" in shown, shown
        for code in ("[unknown_user]", "[bad_email]", "[bad_phone]", "[no_address]"):
            assert code in shown, code
        assert "[duplicate] The same recipient as row 2." in shown
        # Each refused row carries its number (import-export's own table of invalid rows).
        numbers = page.locator("table.import-preview tbody tr td:first-child").all_inner_texts()
        assert [n.strip() for n in numbers if n.strip().isdigit()] == ["4", "5", "6", "7", "8"]
        assert staff.fits()
        with page.expect_navigation():
            page.get_by_role("button", name="Confirm import").click()
        assert "/admin/campaigns/staticlist/" in page.url and "/change/" in page.url, page.url
        done = page.locator("#content, .messagelist, body").first.inner_text()
        assert "3 new" in done and "5 rows left out" in done, done
        assert not staff.errors, staff.errors

    members = {
        (m.key if m.user_id else m.email or m.phone): m
        for m in StaticList.objects.get(name="Launch guests").members.all()
    }
    assert set(members) == {"ana", "ben@example.com", "+33612345678"}
    assert members["ana"].user_id == ana.pk and members["ana"].data == {"first_name": "Ana"}
    assert members["+33612345678"].data == {"first_name": "=SUM(A1:A2)"}
    assert members["+33612345678"].key == lists.address_key("+33612345678")
