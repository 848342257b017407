"""/api/v1/templates: the contract, permissions, four eyes, query budgets, the schema."""

from __future__ import annotations

import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from templates_app import services
from templates_app.models import Template, TemplateVariant, TemplateVersion, VersionStatus

pytestmark = pytest.mark.django_db

BASE = "/api/v1/templates"
NAME = [{"name": "name", "type": "string", "required": True, "example": "Ada"}]


def ok(response, status=200):
    assert response.status_code == status, response.content
    return response.json()


def error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    return body


@pytest.fixture
def shipped(templates):
    """An SMS template live in English and French."""
    template = templates.create(key="order-shipped", channel="sms", variables=NAME)
    templates.live(template, language="en", text="Hi {{ name }}, your order has shipped.")
    templates.live(template, language="fr", text="Bonjour {{ name }}, votre commande est partie.")
    return template


# --------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", BASE, None),
        ("get", f"{BASE}/categories", None),
        ("get", f"{BASE}/versions", None),
        ("get", f"{BASE}/welcome-email", None),
        ("post", BASE, {}),
        ("patch", f"{BASE}/welcome-email", {}),
        ("post", f"{BASE}/welcome-email/versions", {}),
        ("post", f"{BASE}/welcome-email/rollback", {}),
        ("post", f"{BASE}/preview", {}),
        ("post", f"{BASE}/render", {}),
    ],
)
def test_no_token_is_401(method, path, body):
    error(getattr(APIClient(), method)(path, body, format="json"), 401, "token_missing")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", BASE),
        ("patch", f"{BASE}/welcome-email"),
        ("post", f"{BASE}/welcome-email/versions"),
        ("post", f"{BASE}/welcome-email/rollback"),
        ("post", f"{BASE}/preview"),
        ("post", f"{BASE}/versions/00000000-0000-0000-0000-000000000000/approve"),
    ],
)
def test_management_without_the_scope_is_403_scope_missing(sender, user_client, method, path):
    for client in (sender, user_client):
        body = error(getattr(client, method)(path, {}, format="json"), 403, "scope_missing")
        assert "templates:manage" in body["detail"]


def test_reads_need_a_template_or_sending_scope(make_service_token, user_client, sender):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('x', ['users:read'])}")
    error(client.get(BASE), 403, "scope_missing")
    error(user_client.get(BASE), 403, "scope_missing")
    ok(sender.get(BASE))


def test_render_needs_render_or_send_scope(make_service_token, shipped, editor, staff):
    payload = {"template": "order-shipped", "data": {"name": "Ada"}}
    for scopes in (["templates:render"], ["notifications:send"]):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('svc', scopes)}")
        ok(client.post(f"{BASE}/render", payload, format="json"))
    error(editor.post(f"{BASE}/render", payload, format="json"), 403, "scope_missing")
    error(staff.post(f"{BASE}/render", payload, format="json"), 403, "scope_missing")


def test_a_staff_user_manages_and_previews(staff, shipped):
    ok(staff.get(BASE))
    ok(staff.post(f"{BASE}/preview", {"template": "order-shipped"}, format="json"))
    ok(staff.patch(f"{BASE}/order-shipped", {"name": "Shipped"}, format="json"))


# ------------------------------------------------------------------------------------ reading


def test_list_filters_and_query_budget(sender, shipped, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        body = ok(sender.get(BASE, {"limit": 200}))
    keys = {t["key"] for t in body["results"]}
    assert "order-shipped" in keys and "welcome-email" in keys  # ours and the seeded ones
    assert body["count"] == Template.objects.count()
    row = next(t for t in body["results"] if t["key"] == "order-shipped")
    assert row["languages"] == ["en", "fr"]
    assert row["category"] == "transactional" and row["channel"] == "sms"

    sms = ok(sender.get(BASE, {"channel": "sms", "limit": 200}))["results"]
    assert sms and all(t["channel"] == "sms" for t in sms)
    marketing = ok(sender.get(BASE, {"category": "marketing"}))["results"]
    assert {t["key"] for t in marketing} == {
        "announcement-email",
        "announcement-push",
        "announcement-in-app",
    }
    french = ok(sender.get(BASE, {"language": "FR", "channel": "sms"}))["results"]
    assert "order-shipped" in {t["key"] for t in french}
    japanese = ok(sender.get(BASE, {"language": "ja"}))
    assert japanese["count"] == 0


def test_query_count_does_not_grow_with_templates(sender, templates, django_assert_num_queries):
    with django_assert_num_queries(3):  # count, page, live versions
        sender.get(BASE)
    for i in range(5):
        template = templates.create(key=f"extra-{i}", variables=NAME)
        templates.live(template, text="x")
        templates.live(template, language="de", text="x")
    with django_assert_num_queries(3):
        sender.get(BASE)


def test_user_token_list_budget(staff, django_assert_max_num_queries):
    # A user token costs one query to load the user.
    with django_assert_max_num_queries(4):
        ok(staff.get(BASE))


def test_detail_shows_what_is_live(sender, shipped):
    body = ok(sender.get(f"{BASE}/order-shipped"))
    assert body["key"] == "order-shipped"
    assert body["variables"] == NAME
    assert [(v["language"], v["number"], v["variant"]) for v in body["live"]] == [
        ("en", 1, None),
        ("fr", 2, None),
    ]
    error(sender.get(f"{BASE}/nope"), 404, "template_not_found")


def test_categories_lists_every_category(sender, django_assert_max_num_queries):
    with django_assert_max_num_queries(1):
        body = ok(sender.get(f"{BASE}/categories"))
    keys = [c["key"] for c in body]
    # The same list as a user's preferences, templates or not ("alerts" has none seeded).
    assert "alerts" in keys
    transactional = next(c for c in body if c["key"] == "transactional")
    assert transactional["mandatory"] is True and transactional["requires_consent"] is False
    assert next(c for c in body if c["key"] == "marketing")["requires_consent"] is True


def test_versions_list_by_template(sender, shipped, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):
        body = ok(sender.get(f"{BASE}/versions", {"template": "order-shipped"}))
    assert [(v["number"], v["language"], v["status"]) for v in body["results"]] == [
        (2, "fr", "approved"),
        (1, "en", "approved"),
    ]
    assert body["results"][0]["approved_by"] == "service:cms-review"
    with django_assert_max_num_queries(2):
        everything = ok(sender.get(f"{BASE}/versions", {"limit": 200}))
    assert everything["count"] == TemplateVersion.objects.count()
    french = ok(sender.get(f"{BASE}/versions", {"template": "order-shipped", "language": "fr"}))
    assert french["count"] == 1


def test_template_versions_list_budget(sender, shipped, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        body = ok(sender.get(f"{BASE}/order-shipped/versions"))
    assert body["count"] == 2


@pytest.mark.parametrize(
    "path",
    [
        BASE,
        f"{BASE}/",
        f"{BASE}/categories",
        f"{BASE}/categories/",
        f"{BASE}/versions",
        f"{BASE}/versions/",
        f"{BASE}/order-shipped",
        f"{BASE}/order-shipped/",
        f"{BASE}/order-shipped/versions/",
    ],
)
def test_paths_answer_with_and_without_a_trailing_slash(sender, shipped, path):
    ok(sender.get(path))


def test_post_with_a_trailing_slash_keeps_its_body(sender, shipped):
    body = ok(
        sender.post(
            f"{BASE}/render/", {"template": "order-shipped", "data": {"name": "A"}}, format="json"
        )
    )
    assert body["text"] == "Hi A, your order has shipped."


# ------------------------------------------------------------------------------- management


def test_create_patch_and_conflicts(editor):
    payload = {
        "key": "invoice-due",
        "name": "Invoice due",
        "category": "transactional",
        "channel": "email",
        "variables": NAME,
        "default_language": "en",
    }
    body = ok(editor.post(BASE, payload, format="json"), 201)
    assert (
        body["key"] == "invoice-due"
        and body["live"] == []
        and body["created_by"] == ("service:cms")
    )
    error(editor.post(BASE, payload, format="json"), 409, "template_exists")

    changed = ok(
        editor.patch(
            f"{BASE}/invoice-due", {"name": "Invoice overdue", "category": "alerts"}, format="json"
        )
    )
    assert (changed["name"], changed["category"]) == ("Invoice overdue", "alerts")
    body = error(
        editor.patch(f"{BASE}/invoice-due", {"key": "x"}, format="json"), 400, "validation_error"
    )
    assert "key" in body["fields"]


@pytest.mark.parametrize("word", ["categories", "versions", "preview", "render"])
def test_reserved_words_cannot_be_keys(editor, word):
    body = error(
        editor.post(
            BASE,
            {"key": word, "name": "x", "category": "system", "channel": "sms"},
            format="json",
        ),
        400,
        "validation_error",
    )
    assert "reserved" in body["fields"]["key"][0]


def test_create_validates_category_and_variables(editor):
    base = {"key": "k", "name": "x", "channel": "sms"}
    body = error(
        editor.post(BASE, {**base, "category": "nope"}, format="json"), 400, "validation_error"
    )
    assert "category" in body["fields"]
    bad_vars = [{"name": "__class__", "type": "string"}]
    body = error(
        editor.post(BASE, {**base, "category": "system", "variables": bad_vars}, format="json"),
        400,
        "validation_error",
    )
    assert "variables" in body["fields"]
    bad_example = [{"name": "n", "type": "integer", "example": "two"}]
    body = error(
        editor.post(BASE, {**base, "category": "system", "variables": bad_example}, format="json"),
        400,
        "validation_error",
    )
    assert "must be an integer" in body["fields"]["variables"][0]


def test_draft_submit_approve_render(editor, reviewer, sender, templates, committing):
    templates.create(
        key="otp",
        channel="sms",
        variables=[{"name": "code", "type": "string", "example": "123456"}],
    )
    draft = ok(
        editor.post(
            f"{BASE}/otp/versions",
            {"language": "en", "text": "Your code is {{ code }}", "note": "first"},
            format="json",
        ),
        201,
    )
    assert (draft["status"], draft["number"], draft["created_by"]) == (
        "draft",
        1,
        "service:cms",
    )
    vid = draft["id"]
    error(
        editor.post(f"{BASE}/versions/{vid}/approve", {}, format="json"), 409, "invalid_transition"
    )
    assert ok(editor.post(f"{BASE}/versions/{vid}/submit", {}, format="json"))["status"] == (
        "pending_approval"
    )
    # Four eyes: the author may not approve.
    body = error(
        editor.post(f"{BASE}/versions/{vid}/approve/", {}, format="json"), 403, "approval_by_author"
    )
    assert "someone else" in body["detail"]
    with committing():
        approved = ok(
            reviewer.post(f"{BASE}/versions/{vid}/approve", {"note": "ok"}, format="json")
        )
    assert approved["status"] == "approved" and approved["is_live"]
    assert approved["approved_by"] == "service:cms-review"

    rendered = ok(
        sender.post(f"{BASE}/render", {"template": "otp", "data": {"code": "42"}}, format="json")
    )
    assert rendered["text"] == "Your code is 42"
    assert rendered["version"] == vid and rendered["language"] == "en"
    assert rendered["sms"] == {"encoding": "GSM-7", "characters": 15, "units": 15, "segments": 1}
    assert rendered["warnings"] == []


def test_four_eyes_applies_to_users(make_user_token, templates):
    template = templates.create(key="note", variables=NAME)
    ann = APIClient()
    ann.credentials(HTTP_AUTHORIZATION=f"Bearer {make_user_token('ann', staff=True)}")
    ben = APIClient()
    ben.credentials(HTTP_AUTHORIZATION=f"Bearer {make_user_token('ben', staff=True)}")
    vid = ok(
        ann.post(f"{BASE}/note/versions", {"language": "en", "text": "x"}, format="json"), 201
    )["id"]
    ok(ann.post(f"{BASE}/versions/{vid}/submit", {}, format="json"))
    error(ann.post(f"{BASE}/versions/{vid}/approve", {}, format="json"), 403, "approval_by_author")
    assert ok(ben.post(f"{BASE}/versions/{vid}/approve", {}, format="json"))["approved_by"] == (
        "user:ben"
    )
    assert template.versions.get().status == VersionStatus.APPROVED


def test_reject_and_edit_a_draft(editor, reviewer, templates):
    templates.create(key="note", variables=NAME)
    vid = ok(
        editor.post(f"{BASE}/note/versions", {"language": "en", "text": "Hi"}, format="json"), 201
    )["id"]
    ok(editor.post(f"{BASE}/versions/{vid}/submit", {}, format="json"))
    rejected = ok(
        reviewer.post(f"{BASE}/versions/{vid}/reject", {"note": "Say more"}, format="json")
    )
    assert (rejected["status"], rejected["review_note"]) == ("draft", "Say more")
    edited = ok(editor.patch(f"{BASE}/versions/{vid}", {"text": "Hi {{ name }}!"}, format="json"))
    assert edited["text"] == "Hi {{ name }}!"


def test_rollback_through_the_api(editor, sender, shipped, templates, committing):
    v3 = templates.live(shipped, language="en", text="Hello again {{ name }}")
    payload = {"template": "order-shipped", "data": {"name": "Ada"}}
    assert ok(sender.post(f"{BASE}/render", payload, format="json"))["version"] == str(v3.pk)
    first = shipped.versions.get(number=1)
    with committing():
        body = ok(
            editor.post(
                f"{BASE}/order-shipped/rollback",
                {"version": str(first.pk), "language": "en"},
                format="json",
            )
        )
    assert body["is_live"] and body["number"] == 1
    rendered = ok(sender.post(f"{BASE}/render", payload, format="json"))
    assert rendered["text"] == "Hi Ada, your order has shipped."
    error(
        editor.post(
            f"{BASE}/order-shipped/rollback",
            {"version": str(first.pk), "language": "fr"},
            format="json",
        ),
        409,
        "language_mismatch",
    )


# --------------------------------------------------------------------------- preview / render


def test_preview_by_key_uses_examples_and_locale(editor, shipped):
    body = ok(
        editor.post(
            f"{BASE}/preview", {"template": "order-shipped", "locale": "fr-CA"}, format="json"
        )
    )
    assert body["text"] == "Bonjour Ada, votre commande est partie."
    assert body["language"] == "fr"
    assert body["sms"]["encoding"] == "GSM-7"
    assert body["warnings"] == []


def test_preview_a_given_version(editor, shipped):
    version = shipped.versions.get(number=1)
    body = ok(
        editor.post(
            f"{BASE}/preview",
            {"template": "order-shipped", "version": str(version.pk), "data": {"name": "Zed"}},
            format="json",
        )
    )
    assert body["text"] == "Hi Zed, your order has shipped."
    assert body["version"] == str(version.pk)


def test_preview_an_unsaved_email_draft(editor):
    body = ok(
        editor.post(
            f"{BASE}/preview",
            {
                "channel": "email",
                "subject": "Hello {{ name }}",
                "html": "<style>h1{color:red}</style><h1>Hi {{ name }}</h1>"
                "<p>{{ total|currency('EUR') }}</p>",
                "data": {"name": "Zoé", "total": "9.5"},
                "locale": "fr",
            },
            format="json",
        )
    )
    assert body["subject"] == "Hello Zoé"
    assert '<h1 style="color: red;">Hi Zoé</h1>' in body["html"]
    assert "9,50" in body["text"] and "Hi Zoé" in body["text"]
    assert body["warnings"] == []
    assert "sms" not in body


def test_preview_an_unsaved_sms_draft_reports_segments(editor):
    body = ok(
        editor.post(
            f"{BASE}/preview",
            {"channel": "sms", "text": "{{ 'é' * 100 }}{{ '€' * 31 }}", "data": {}},
            format="json",
        )
    )
    assert body["sms"] == {"encoding": "GSM-7", "characters": 131, "units": 162, "segments": 2}


def test_preview_push_and_in_app_drafts(editor):
    push = ok(
        editor.post(
            f"{BASE}/preview",
            {
                "channel": "push",
                "title": "Hi {{ n }}",
                "body": "B {{ n }}",
                "push_data": {"id": "{{ n }}", "fixed": 3},
                "deep_link": "app://x/{{ n }}",
                "data": {"n": 7},
            },
            format="json",
        )
    )
    assert (push["title"], push["body"], push["deep_link"]) == ("Hi 7", "B 7", "app://x/7")
    assert push["data"] == {"id": "7", "fixed": 3}
    in_app = ok(
        editor.post(
            f"{BASE}/preview",
            {
                "channel": "in_app",
                "title": "T",
                "body": "<b>{{ n }}</b>",
                "action_url": "https://x/{{ n }}",
                "data": {"n": 1},
            },
            format="json",
        )
    )
    assert (in_app["title"], in_app["body"], in_app["action_url"]) == (
        "T",
        "<b>1</b>",
        "https://x/1",
    )


def test_preview_needs_a_template_or_a_channel(editor):
    error(editor.post(f"{BASE}/preview", {"data": {}}, format="json"), 400, "validation_error")
    error(
        editor.post(f"{BASE}/preview", {"template": "x", "channel": "sms"}, format="json"),
        400,
        "validation_error",
    )


def test_missing_variable_is_400_naming_it(sender, shipped):
    body = error(
        sender.post(f"{BASE}/render", {"template": "order-shipped", "data": {}}, format="json"),
        400,
        "missing_variable",
    )
    assert "'name'" in body["detail"]
    assert body["fields"] == {"name": ["This variable is required."]}


def test_missing_variable_in_a_draft_is_400_naming_it_and_the_line(editor):
    body = error(
        editor.post(f"{BASE}/preview", {"channel": "sms", "text": "Hi\n{{ who }}"}, format="json"),
        400,
        "missing_variable",
    )
    assert "'who'" in body["detail"] and "line 2" in body["detail"]


def test_invalid_variable_is_400(sender, templates):
    template = templates.create(key="count", variables=[{"name": "n", "type": "integer"}])
    templates.live(template, text="{{ n }}")
    body = error(
        sender.post(f"{BASE}/render", {"template": "count", "data": {"n": "x"}}, format="json"),
        400,
        "invalid_variable",
    )
    assert body["fields"] == {"n": ["'n' must be an integer."]}


def test_syntax_and_limit_errors_are_400(editor):
    error(
        editor.post(f"{BASE}/preview", {"channel": "sms", "text": "{% if %}"}, format="json"),
        400,
        "template_syntax",
    )
    error(
        editor.post(
            f"{BASE}/preview", {"channel": "sms", "text": "{{ 'x' * 10**9 }}"}, format="json"
        ),
        400,
        "render_limit",
    )


SSTI = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ ''|attr('__class__') }}",
    "{{ '{0.__class__}'.format('') }}",
    "{{ '{a}'.format_map({'a': 1}) }}",
    "{% import 'os' as os %}",
    "{% include '/etc/passwd' %}",
    "{{ ''['__class__'] }}",
]


@pytest.mark.parametrize("payload", SSTI)
def test_injection_in_a_preview_is_refused(editor, payload):
    body = error(
        editor.post(f"{BASE}/preview", {"channel": "sms", "text": payload}, format="json"),
        400,
        "template_security",
    )
    assert body["detail"]


@pytest.mark.parametrize("payload", SSTI)
def test_injection_in_a_draft_is_refused(editor, templates, payload):
    templates.create(key="target", channel="sms")
    error(
        editor.post(f"{BASE}/target/versions", {"language": "en", "text": payload}, format="json"),
        400,
        "template_security",
    )
    assert not TemplateVersion.objects.filter(template__key="target").exists()


def test_render_unknown_template_or_language(sender, shipped):
    error(
        sender.post(f"{BASE}/render", {"template": "nope"}, format="json"),
        404,
        "template_not_found",
    )
    error(
        sender.post(
            f"{BASE}/render", {"template": "order-shipped", "locale": "not a tag"}, format="json"
        ),
        400,
        "validation_error",
    )
    error(
        sender.post(
            f"{BASE}/render",
            {"template": "order-shipped", "data": {"name": "x"}, "timezone": "Mars/Base"},
            format="json",
        ),
        400,
        "validation_error",
    )


def test_render_with_recipient_records_the_variant(sender, templates):
    template = templates.create(key="promo", variables=NAME)
    templates.live(template, text="A {{ name }}")
    variant = services.variant_save(variant=TemplateVariant(template=template, key="b", weight=1))
    templates.live(template, variant=variant, text="B {{ name }}")
    body = ok(
        sender.post(
            f"{BASE}/render",
            {"template": "promo", "data": {"name": "x"}, "recipient": "u1"},
            format="json",
        )
    )
    assert body["variant"] == "b" and body["text"] == "B x"


# ------------------------------------------------------------------------------------ schema


def test_schema_has_our_operations_without_warnings():
    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    ours = {
        path: operations
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1/templates")
    }
    operation_ids = {op["operationId"] for ops in ours.values() for op in ops.values()}
    assert {
        "templates_list",
        "templates_create",
        "templates_retrieve",
        "templates_partial_update",
        "templates_categories_list",
        "templates_versions_list",
        "templates_versions_create",
        "templates_versions_transition",
        "templates_rollback",
        "templates_preview",
        "templates_render",
    } <= operation_ids
    messages = list(GENERATOR_STATS._warn_cache) + list(GENERATOR_STATS._error_cache)
    assert not [m for m in messages if "templates_app" in m or "Template" in m], messages
