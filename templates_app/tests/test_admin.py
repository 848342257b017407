"""The admin: what is live per language, preview beside the source, diff, review actions."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from communication.models import User
from templates_app import services
from templates_app.models import Template, TemplateVersion, VersionStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("editor", "editor@example.com", "x")
    client.force_login(user)
    return client


@pytest.fixture
def other_admin():
    user = User.objects.create_superuser("reviewer", "reviewer@example.com", "x")
    client = Client()
    client.force_login(user)
    return client


def test_template_list_and_live_overview(admin_client, django_assert_max_num_queries):
    with django_assert_max_num_queries(12):
        response = admin_client.get(reverse("admin:templates_app_template_changelist"))
    assert response.status_code == 200
    assert b"welcome-email" in response.content
    assert b"Render caches in this process" in response.content
    assert b"de v4 \xc2\xb7 en v1" in response.content  # live languages, version numbers
    template = Template.objects.get(key="welcome-email")
    response = admin_client.get(reverse("admin:templates_app_template_change", args=[template.pk]))
    assert response.status_code == 200
    assert b"Live per language" in response.content
    assert b"system:seed" in response.content


def test_version_change_page_shows_the_rendered_preview(admin_client):
    version = TemplateVersion.objects.get(template__key="receipt-email", language="fr")
    response = admin_client.get(
        reverse("admin:templates_app_templateversion_change", args=[version.pk])
    )
    assert response.status_code == 200
    content = response.content.decode()
    assert "Votre reçu pour la commande 1042" in content  # subject with the example data
    assert "srcdoc=" in content and "Fountain pen" in content
    assert "41,00" in content  # the total, formatted for French
    # Approved: the source is shown read-only, and there is nothing to save.
    assert 'name="html"' not in content
    assert 'name="_save"' not in content
    response = admin_client.post(
        reverse("admin:templates_app_templateversion_change", args=[version.pk]),
        {"text": "changed"},
    )
    assert response.status_code == 403
    version.refresh_from_db()
    assert version.text == ""


def test_sms_preview_reports_segments(admin_client):
    version = TemplateVersion.objects.get(template__key="reminder-sms", language="de")
    response = admin_client.get(
        reverse("admin:templates_app_templateversion_change", args=[version.pk])
    )
    assert b"segment(s)" in response.content and b"GSM-7" in response.content


def test_preview_error_is_shown_not_raised(admin_client, templates):
    template = templates.create(key="broken", variables=[])

    version = services.version_create(
        template=template, actor="user:x", language="en", text="{{ who }}"
    )
    response = admin_client.get(
        reverse("admin:templates_app_templateversion_change", args=[version.pk])
    )
    assert response.status_code == 200
    assert b"Missing variable" in response.content
    assert b'name="text"' in response.content  # a draft stays editable


def test_diff_between_two_versions(admin_client, templates):
    template = templates.create(key="greeting", variables=[])
    first = templates.live(template, text="Hello there\nSee you")
    second = templates.live(template, text="Hello everyone\nSee you")
    url = reverse("admin:templates_app_templateversion_diff", args=[second.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    content = response.content.decode()
    assert f"v{first.number} (en)" in content and f"v{second.number} (en)" in content
    assert "diff_chg" in content and "everyone" in content
    response = admin_client.get(url, {"against": str(second.pk)})
    assert response.status_code == 200


def test_add_a_draft_through_the_admin(admin_client):
    template = Template.objects.get(key="reminder-sms")
    response = admin_client.post(
        reverse("admin:templates_app_templateversion_add"),
        {
            "template": template.pk,
            "language": "it",
            "text": "Promemoria: {{ what }}",
            "note": "Italian",
            "data": "{}",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    version = TemplateVersion.objects.get(template=template, language="it")
    assert version.status == VersionStatus.DRAFT
    assert version.number == 5 and version.created_by == "staff:editor"


def test_admin_form_refuses_an_injection(admin_client):
    template = Template.objects.get(key="reminder-sms")
    response = admin_client.post(
        reverse("admin:templates_app_templateversion_add"),
        {"template": template.pk, "language": "it", "text": "{{ ''.__class__ }}", "data": "{}"},
    )
    assert response.status_code == 200
    assert b"not allowed" in response.content
    assert not TemplateVersion.objects.filter(template=template, language="it").exists()


def test_review_actions_keep_four_eyes(admin_client, other_admin, templates):
    template = templates.create(key="note", variables=[])

    version = services.version_create(
        template=template, actor="staff:editor", language="en", text="hi"
    )
    changelist = reverse("admin:templates_app_templateversion_changelist")
    admin_client.post(changelist, {"action": "submit", "_selected_action": [version.pk]})
    version.refresh_from_db()
    assert version.status == VersionStatus.PENDING

    response = admin_client.post(
        changelist, {"action": "approve", "_selected_action": [version.pk]}, follow=True
    )
    assert b"someone else must approve" in response.content
    version.refresh_from_db()
    assert version.status == VersionStatus.PENDING

    transition = reverse(
        "admin:templates_app_templateversion_transition", args=[version.pk, "approve"]
    )
    response = other_admin.post(transition, {"note": "fine"})
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.is_live and version.approved_by == "staff:reviewer"


def test_make_live_again_from_the_admin(
    admin_client, templates, django_capture_on_commit_callbacks
):
    template = templates.create(key="note", variables=[])
    first = templates.live(template, text="one")
    templates.live(template, text="two")
    changelist = reverse("admin:templates_app_templateversion_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(changelist, {"action": "make_live", "_selected_action": [first.pk]})
    first.refresh_from_db()
    assert first.is_live

    assert services.template_render(key="note", data={})["text"] == "one"


def test_version_list_query_budget(admin_client, django_assert_max_num_queries):
    with django_assert_max_num_queries(12):
        response = admin_client.get(reverse("admin:templates_app_templateversion_changelist"))
    assert response.status_code == 200
    assert b"delete_selected" not in response.content  # approved history cannot be bulk-deleted
