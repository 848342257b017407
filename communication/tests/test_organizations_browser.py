"""Organizations in the console, in Chromium: staff add an organization under a parent and set
its policy (a cycle refused with why), the list shows the tree's paths, the change is audited
with the policy before and after, and the API answers the effective policy. Skipped, saying why,
where Debian's ``chromium`` or Playwright is missing."""

from __future__ import annotations

import pytest

from communication import organizations
from communication.models import AuditEntry, Organization, User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def staff(db):
    return User.objects.create_superuser("orgadmin", "orgadmin@example.com", STAFF_PASSWORD)


def test_staff_build_the_tree_and_set_its_policy(live_asgi, staff):
    Organization.objects.create(id="acme", name="Acme")
    with chromium() as browser:
        console = StaffBrowser(browser, live_asgi.url, "orgadmin")
        page = console.page
        # Under People in the sidebar.
        page.locator("a[href='/admin/communication/organization/']").first.click()
        page.wait_for_url("**/admin/communication/organization/")
        assert page.locator("tr", has_text="acme").count() >= 1
        console.goto("/admin/communication/organization/add/")
        page.fill("#id_id", "acme-emea")
        page.fill("#id_name", "EMEA")
        # The parent is picked by searching (autocomplete), as in a large tree.
        page.locator("#id_parent").locator("xpath=..").locator(".select2-selection").click()
        page.locator(".select2-search__field").fill("acm")
        page.locator(".select2-results__option", has_text="Acme (acme)").click()
        page.select_option("#id_direct_scope", "organization")
        page.fill("#id_group_create_roles", '["manager"]')
        page.locator("[name=_save]").click()
        page.wait_for_url("**/admin/communication/organization/")
        row = page.locator("tr", has_text="acme/acme-emea").first
        assert "EMEA" in row.inner_text()
        assert "manager" in row.inner_text()

        # acme under its own child: refused with why, nothing saved.
        console.goto("/admin/communication/organization/acme/change/")
        page.locator("#id_parent").locator("xpath=..").locator(".select2-selection").click()
        page.locator(".select2-search__field").fill("emea")
        page.locator(".select2-results__option", has_text="EMEA (acme-emea)").click()
        page.locator("[name=_save]").click()
        assert "would make a cycle" in page.locator(".errorlist").inner_text()

        # The top sets who may broadcast; EMEA inherits it.
        console.goto("/admin/communication/organization/acme/change/")
        page.fill("#id_broadcast_roles", '["admin"]')
        page.locator("[name=_save]").click()
        page.wait_for_url("**/admin/communication/organization/")
        console.goto("/admin/communication/organization/acme-emea/change/")
        effective = page.get_by_text("direct scope:").inner_text()
        assert "direct scope: organization" in effective
        assert "broadcasters: admin" in effective
        assert console.fits()
        assert not console.errors, console.errors

    emea = Organization.objects.get(id="acme-emea")
    assert (emea.parent_id, emea.path) == ("acme", "acme/acme-emea")
    assert Organization.objects.get(id="acme").parent_id is None
    assert organizations.organization_policy("acme-emea").as_dict() == {
        "direct_scope": "organization",
        "group_create_roles": ["manager"],
        "broadcast_roles": ["admin"],
    }
    created = AuditEntry.objects.get(action="organization.create", object_id="acme-emea")
    assert created.actor == "staff:orgadmin"
    assert created.changes["parent"] == [None, "acme"]
    assert created.changes["direct_scope"] == [None, "organization"]
    changed = AuditEntry.objects.get(action="organization.change", object_id="acme")
    assert changed.changes == {"broadcast_roles": [None, ["admin"]]}
    # One entry per change: the console's generic one stays out.
    assert not AuditEntry.objects.filter(
        action__startswith="admin.", object_type="communication.organization"
    ).exists()
