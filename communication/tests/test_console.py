"""The console's home page as a frame for the apps' panels: order, permissions, replacement."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from lxml import html

from communication import console
from communication.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture
def registry():
    """The registered panels, restored after the test."""
    saved = dict(console._panels)
    yield console._panels
    console._panels.clear()
    console._panels.update(saved)


def panels_on(client) -> list[str]:
    response = client.get("/admin/")
    assert response.status_code == 200
    doc = html.fromstring(response.content.decode())
    return [section.get("data-panel") for section in doc.xpath("//section[@data-panel]")]


def test_every_app_contributes_its_panels_in_order(admin_client):
    assert panels_on(admin_client) == [
        "notifications.sends",
        "notifications.providers",
        "notifications.backlog",
        "notifications.failures",
        "templates.awaiting_approval",
        "notifications.due_soon",
    ]


def test_a_staff_member_sees_the_panels_of_what_they_may_view(client):
    reviewer = User.objects.create_user("reviewer", "r@example.com", "pw", is_staff=True)
    reviewer.user_permissions.add(
        Permission.objects.get(
            codename="view_templateversion", content_type__app_label="templates_app"
        )
    )
    client.force_login(reviewer)
    assert panels_on(client) == ["templates.awaiting_approval"]

    nobody = User.objects.create_user("nobody", "n@example.com", "pw", is_staff=True)
    client.force_login(nobody)
    response = client.get("/admin/")
    assert b"your account may see none of the console" in response.content


def test_a_panel_registered_again_replaces_the_first(admin_client, registry):
    @console.panel(
        key="tests.hello", title="Hello", order=1, link=lambda: "/elsewhere/", link_text="Elsewhere"
    )
    def first(request):
        return console.table(["Who"], [["first"]], empty="nobody")

    @console.panel(key="tests.hello", title="Hello", order=1)
    def second(request):
        return console.table(
            ["Who", "Where"],
            [[console.cell("<second>", strong=True), console.cell("there", href="/there/")]],
            empty="nobody",
            footer="And 2 more.",
        )

    response = admin_client.get("/admin/")
    doc = html.fromstring(response.content.decode())
    (section,) = doc.xpath('//section[@data-panel="tests.hello"]')
    assert panels_on(admin_client)[0] == "tests.hello"
    assert [td.text_content().strip() for td in section.xpath(".//td")] == ["<second>", "there"]
    assert section.xpath(".//a[text()='there']")[0].get("href") == "/there/"
    assert "And 2 more." in section.text_content()
    assert not section.xpath(".//a[@href='/elsewhere/']")


def test_an_empty_table_panel_says_so(admin_client, registry):
    console.panel(key="tests.empty", title="Empty", order=1)(
        lambda request: console.table(["Who"], [], empty="Nobody here yet.")
    )
    doc = html.fromstring(admin_client.get("/admin/").content.decode())
    (section,) = doc.xpath('//section[@data-panel="tests.empty"]')
    assert not section.xpath(".//table")
    assert section.xpath('.//p[@class="console-empty"]')[0].text_content() == "Nobody here yet."


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (dt.timedelta(seconds=20), "less than a minute"),
        (dt.timedelta(minutes=3, seconds=10), "3 minutes"),
        (dt.timedelta(hours=26), "1 day"),
        (-dt.timedelta(minutes=12, seconds=1), "12 minutes"),
    ],
)
def test_age_reads_in_one_unit(delta, expected):
    now = timezone.now()
    # Django's timesince keeps the number and its unit together with a no-break space.
    assert console.age(now - delta, now).replace("\xa0", " ") == expected
