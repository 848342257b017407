"""The admin: what is live per language, variables as rows, preview beside the source, diff,
review actions. (Clicking through the review buttons in Chromium: test_admin_browser.py.)"""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from communication.models import User
from templates_app import services
from templates_app.admin.versions import NOTE_FIELD
from templates_app.models import Template, TemplateVersion, VersionStatus

pytestmark = pytest.mark.django_db

SUBMIT_LINE = "templates_app_templateversion_submit_for_approval"


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


def change_url(version) -> str:
    return reverse("admin:templates_app_templateversion_change", args=[version.pk])


def transition_url(version, action: str) -> str:
    return reverse("admin:templates_app_templateversion_transition", args=[version.pk, action])


def title_of(response) -> str:
    content = response.content.decode()
    return " ".join(content.split("<title>", 1)[1].split("</title>", 1)[0].split())


# ------------------------------------------------------------------------------------ templates


def test_template_list_and_live_overview(admin_client, django_assert_max_num_queries):
    with django_assert_max_num_queries(12):
        response = admin_client.get(reverse("admin:templates_app_template_changelist"))
    assert response.status_code == 200
    assert b"welcome-email" in response.content
    # A title is a title: no cache statistics in it or in the heading.
    assert b"Render caches" not in response.content
    assert title_of(response).startswith("Select template to change |")
    assert b"de v4 \xc2\xb7 en v1" in response.content  # live languages, version numbers
    template = Template.objects.get(key="welcome-email")
    response = admin_client.get(reverse("admin:templates_app_template_change", args=[template.pk]))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Live per language" in content and "system:seed" in content
    en = template.versions.get(language="en", is_live=True)
    assert f'href="{change_url(en)}">v{en.number}</a>' in content
    # "Write a new version" opens the add form for this template in its default language.
    add = reverse("admin:templates_app_templateversion_add")
    assert f"{add}?template={template.pk}&amp;language=en" in content


def test_template_add_form_shows_no_database_default(admin_client):
    response = admin_client.get(reverse("admin:templates_app_template_add"))
    assert response.status_code == 200
    assert b"DatabaseDefault" not in response.content
    assert b"Created at" not in response.content


def variable_rows(rows: list[dict]) -> dict:
    """The POST data of the variables table for ``rows``."""
    data = {"variables-TOTAL_FORMS": str(len(rows))}
    for i, row in enumerate(rows):
        for field in ("name", "type", "example", "description"):
            data[f"variables-{i}-{field}"] = row.get(field, "")
        if row.get("required", True):
            data[f"variables-{i}-required"] = "on"
        if row.get("delete"):
            data[f"variables-{i}-delete"] = "on"
    return data


def template_post(template: Template, rows: list[dict]) -> dict:
    return {
        "name": template.name,
        "description": template.description,
        "category": template.category_id,
        "active": "on",
        "default_language": template.default_language,
        "sms_max_segments": "",
        "variants-TOTAL_FORMS": "0",
        "variants-INITIAL_FORMS": "0",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        **variable_rows(rows),
    }


def test_variables_are_edited_as_rows(admin_client):
    template = Template.objects.get(key="receipt-email")
    url = reverse("admin:templates_app_template_change", args=[template.pk])
    content = admin_client.get(url).content.decode()
    # One row per variable with its own inputs, not a JSON text area.
    assert 'name="variables-0-name"' in content and 'value="name"' in content
    assert 'name="variables-TOTAL_FORMS"' in content
    assert 'name="variables"' not in content
    # A list example is shown as JSON, a number example as it was written.
    assert "41.00" in content

    before = template.variables
    rows = [
        {
            "name": spec["name"],
            "type": spec["type"],
            "required": spec["required"],
            "example": spec["example"] if isinstance(spec["example"], str) else None,
            "description": spec.get("description", ""),
        }
        for spec in before
    ]
    for row, spec in zip(rows, before, strict=True):
        if row["example"] is None:
            row["example"] = json.dumps(spec["example"])
    # Saved unchanged, the schema round-trips exactly.
    response = admin_client.post(url, template_post(template, rows))
    assert response.status_code == 302, response.content.decode()[:2000]
    template.refresh_from_db()
    assert template.variables == before

    # Edit one, remove one, add one (an integer, typed as text).
    rows[0]["example"] = "Grace"
    rows[-1]["delete"] = True  # action_url
    rows.append({"name": "points", "type": "integer", "required": False, "example": "12"})
    response = admin_client.post(url, template_post(template, rows))
    assert response.status_code == 302
    template.refresh_from_db()
    names = [spec["name"] for spec in template.variables]
    assert "action_url" not in names and names[-1] == "points"
    assert template.variables[0]["example"] == "Grace"
    assert template.variables[-1] == {
        "name": "points",
        "type": "integer",
        "required": False,
        "example": 12,
    }


def test_a_wrong_variable_is_refused_by_the_one_validator(admin_client):
    template = Template.objects.get(key="reminder-sms")
    url = reverse("admin:templates_app_template_change", args=[template.pk])
    before = template.variables
    rows = [{"name": "count", "type": "integer", "example": "many"}]
    response = admin_client.post(url, template_post(template, rows))
    assert response.status_code == 200
    # validate_variables (the API's too) names the problem; the rows are shown again as typed.
    assert b"variables[0].example: &#x27;count&#x27; must be an integer." in response.content
    assert b'value="many"' in response.content or b">many</textarea>" in response.content
    response = admin_client.post(url, template_post(template, [{"name": "loop"}]))
    assert b"is reserved" in response.content
    template.refresh_from_db()
    assert template.variables == before


# ------------------------------------------------------------------------------------- versions


def test_version_change_page_shows_the_rendered_preview(admin_client):
    version = TemplateVersion.objects.get(template__key="receipt-email", language="fr")
    response = admin_client.get(change_url(version))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Votre reçu pour la commande 1042" in content  # subject with the example data
    assert "srcdoc=" in content and "Fountain pen" in content
    assert "41,00" in content  # the total, formatted for French
    # Its number and status, in the title and the review panel.
    assert title_of(response).startswith(f"receipt-email v{version.number} [fr] · Approved · live")
    assert 'data-status="approved"' in content
    # Approved: the source is shown read-only (as code), and there is nothing to save.
    assert 'name="html"' not in content
    assert '<pre class="tpl-code">&lt;!DOCTYPE html&gt;' in content
    assert 'name="_save"' not in content and SUBMIT_LINE not in content
    # Live: nothing to review; a new draft starts from this one; a test can be sent.
    assert "data-review-action" not in content
    assert f"?template={version.template_id}&amp;from={version.pk}" in content
    send_test = reverse("admin:notifications_send_test")
    assert f'href="{send_test}?template_version={version.pk}"' in content
    response = admin_client.post(change_url(version), {"text": "changed"})
    assert response.status_code == 403
    version.refresh_from_db()
    assert version.text == ""


def test_sms_preview_reports_segments(admin_client):
    version = TemplateVersion.objects.get(template__key="reminder-sms", language="de")
    response = admin_client.get(change_url(version))
    assert b"segment(s)" in response.content and b"GSM-7" in response.content


def test_preview_error_is_shown_not_raised(admin_client, templates):
    template = templates.create(key="broken", variables=[])

    version = services.version_create(
        template=template, actor="user:x", language="en", text="{{ who }}"
    )
    response = admin_client.get(change_url(version))
    assert response.status_code == 200
    assert b"Missing variable" in response.content
    assert b'name="text"' in response.content  # a draft stays editable
    assert SUBMIT_LINE.encode() in response.content  # ... and can be submitted


def test_diff_between_two_versions(admin_client, templates):
    template = templates.create(key="greeting", variables=[])
    first = templates.live(template, text="Hello there\nSee you")
    second = templates.live(template, text="Hello everyone\nSee you")
    url = reverse("admin:templates_app_templateversion_diff", args=[second.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    content = response.content.decode()
    # By default against the one live before it, in the same language.
    assert f"v{first.number} (en)" in content and f"v{second.number} (en)" in content
    assert "diff_chg" in content and "everyone" in content
    # In its own scrolling box.
    assert content.split('<div class="tpl-diff">', 1)[1].lstrip().startswith('<table class="diff"')
    assert title_of(response).startswith(f"Changes in greeting v2 [en] since v{first.number}")
    response = admin_client.get(url, {"against": str(second.pk)})  # itself: not a choice
    assert response.status_code == 200
    response = admin_client.get(url, {"against": "not-a-uuid"})
    assert response.status_code == 200


def test_add_form_shows_the_channel_fields_and_no_database_default(admin_client):
    template = Template.objects.get(key="reminder-sms")
    add = reverse("admin:templates_app_templateversion_add")
    response = admin_client.get(add)
    assert response.status_code == 200
    assert b"DatabaseDefault" not in response.content
    response = admin_client.get(add, {"template": str(template.pk)})
    content = response.content.decode()
    assert "DatabaseDefault" not in content and "Created at" not in content
    assert 'name="text"' in content and 'name="subject"' not in content
    assert title_of(response).startswith("New version of reminder-sms")
    assert SUBMIT_LINE in content


def test_new_draft_from_a_version_starts_from_its_source(admin_client):
    source = TemplateVersion.objects.get(template__key="reminder-sms", language="de")
    add = reverse("admin:templates_app_templateversion_add")
    response = admin_client.get(add, {"template": str(source.template_id), "from": str(source.pk)})
    content = response.content.decode()
    assert 'name="language" value="de"' in content
    assert source.text.split("{{")[0].strip() in content


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


def test_save_and_submit_for_approval(admin_client):
    template = Template.objects.get(key="reminder-sms")
    add = reverse("admin:templates_app_templateversion_add") + f"?template={template.pk}"
    response = admin_client.post(
        add,
        {
            "template": template.pk,
            "language": "it",
            "text": "Promemoria: {{ what }}",
            SUBMIT_LINE: "",
        },
        follow=True,
    )
    version = TemplateVersion.objects.get(template=template, language="it")
    assert response.redirect_chain[-1][0] == change_url(version)
    assert version.status == VersionStatus.PENDING and version.submitted_by == "staff:editor"
    assert b"saved and submitted for approval" in response.content

    # A draft's edits are saved before it is submitted.
    services.version_reject(version=version, actor="staff:reviewer", note="Say when")
    response = admin_client.post(
        change_url(version),
        {"text": "Promemoria: {{ what }} alle {{ due_at }}", "note": "", SUBMIT_LINE: ""},
        follow=True,
    )
    version.refresh_from_db()
    assert version.status == VersionStatus.PENDING
    assert version.text == "Promemoria: {{ what }} alle {{ due_at }}"


def test_a_draft_that_does_not_render_is_saved_but_not_submitted(admin_client, templates):
    template = templates.create(
        key="needs-example", variables=[{"name": "who", "type": "integer", "example": 1}]
    )
    version = services.version_create(
        template=template, actor="staff:editor", language="en", text="Hi"
    )
    response = admin_client.post(
        change_url(version),
        {"text": "Hi {{ who }} {{ nobody }}", "note": "", SUBMIT_LINE: ""},
        follow=True,
    )
    version.refresh_from_db()
    assert version.status == VersionStatus.DRAFT
    assert version.text == "Hi {{ who }} {{ nobody }}"
    assert b"nobody" in response.content.split(b"messages", 1)[-1]


def test_admin_form_refuses_an_injection(admin_client):
    template = Template.objects.get(key="reminder-sms")
    response = admin_client.post(
        reverse("admin:templates_app_templateversion_add"),
        {"template": template.pk, "language": "it", "text": "{{ ''.__class__ }}", "data": "{}"},
    )
    assert response.status_code == 200
    assert b"not allowed" in response.content
    assert not TemplateVersion.objects.filter(template=template, language="it").exists()


def test_admin_form_holds_sources_to_the_apis_limits(admin_client):
    template = Template.objects.get(key="welcome-email")
    html = "<p>" + "x" * 200_000 + "</p>"
    response = admin_client.post(
        reverse("admin:templates_app_templateversion_add"),
        {"template": template.pk, "language": "it", "subject": "Ciao", "html": html},
    )
    assert response.status_code == 200
    assert "no more than 200000 characters" in str(response.context["adminform"].form.errors)
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

    # The author's page says so beside a disabled button ...
    content = admin_client.get(change_url(version)).content.decode()
    assert 'data-review-action="approve"' in content
    assert "You cannot approve this version: staff:editor wrote or submitted" in content
    # ... and a post from a stale page is answered on the page, not with a JSON error.
    response = admin_client.post(transition_url(version, "approve"), follow=True)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert b"someone else must approve it" in response.content
    version.refresh_from_db()
    assert version.status == VersionStatus.PENDING

    # The reviewer sees an enabled button.
    content = other_admin.get(change_url(version)).content.decode()
    assert "You cannot approve" not in content
    response = other_admin.post(transition_url(version, "approve"), {NOTE_FIELD: "fine"})
    assert response.status_code == 302 and response["Location"] == change_url(version)
    version.refresh_from_db()
    assert version.is_live and version.approved_by == "staff:reviewer"
    assert version.review_note == "fine"


def test_reject_with_a_note(admin_client, other_admin, templates):
    template = templates.create(key="note", variables=[])
    version = services.version_create(
        template=template, actor="staff:editor", language="en", text="hi"
    )
    services.version_submit(version=version, actor="staff:editor")
    response = other_admin.post(
        transition_url(version, "reject"), {NOTE_FIELD: "Say more"}, follow=True
    )
    assert b"sent back to draft" in response.content
    version.refresh_from_db()
    assert (version.status, version.review_note) == (VersionStatus.DRAFT, "Say more")
    assert b"Say more" in admin_client.get(change_url(version)).content


def test_transitions_need_a_post_and_a_known_action(admin_client, templates):
    template = templates.create(key="note", variables=[])
    version = templates.live(template, text="one")
    assert admin_client.get(transition_url(version, "archive")).status_code == 405
    assert admin_client.post(transition_url(version, "delete")).status_code == 403


def test_make_live_again_and_archive_from_the_admin(
    admin_client, templates, django_capture_on_commit_callbacks
):
    template = templates.create(key="note", variables=[])
    first = templates.live(template, text="one")
    second = templates.live(template, text="two")
    changelist = reverse("admin:templates_app_templateversion_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(changelist, {"action": "make_live", "_selected_action": [first.pk]})
    first.refresh_from_db()
    assert first.is_live
    assert services.template_render(key="note", data={})["text"] == "one"

    # The version taken down offers the rollback and the archive buttons.
    content = admin_client.get(change_url(second)).content.decode()
    assert 'data-review-action="make_live"' in content and 'data-review-action="archive"' in content
    response = admin_client.post(transition_url(second, "archive"), follow=True)
    assert b"archived" in response.content
    second.refresh_from_db()
    assert second.status == VersionStatus.ARCHIVED


def test_version_list_query_budget(admin_client, django_assert_max_num_queries):
    with django_assert_max_num_queries(12):
        response = admin_client.get(reverse("admin:templates_app_templateversion_changelist"))
    assert response.status_code == 200
    assert b"delete_selected" not in response.content  # approved history cannot be bulk-deleted
