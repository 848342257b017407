"""Versions, review, live versions, rollback, the render cache, language fallback, variants."""

from __future__ import annotations

import collections

import pytest
from django.core.cache import cache
from django.db import IntegrityError, transaction

from communication.auth.tokens import ServicePrincipal
from communication.exceptions import ConflictError
from communication.models import Category, User
from templates_app import engine, errors, selectors, services
from templates_app.models import Template, TemplateVariant, TemplateVersion, VersionStatus

pytestmark = pytest.mark.django_db

NAME = [{"name": "name", "type": "string", "required": True, "example": "Ada"}]


def render(key="order-shipped", **kwargs):
    kwargs.setdefault("data", {"name": "Ada"})
    return services.template_render(key=key, **kwargs)


# ------------------------------------------------------------------------------- lifecycle


def test_versions_are_numbered_per_template(templates):
    template = templates.create(variables=NAME)
    first = services.version_create(template=template, actor="user:a", language="en", text="1")
    second = services.version_create(template=template, actor="user:a", language="fr", text="2")
    assert (first.number, second.number) == (1, 2)
    assert first.status == VersionStatus.DRAFT and not first.is_live
    assert first.created_by == "user:a"


def test_draft_must_fit_the_channel(templates):
    template = templates.create(channel="email", variables=NAME)
    with pytest.raises(Exception) as info:
        services.version_create(template=template, actor="user:a", language="en", text="x")
    assert info.value.fields == {
        "subject": ["This field is required for this channel."],
        "html": ["This field is required for this channel."],
    }
    sms = templates.create(key="sms-one", channel="sms")
    with pytest.raises(Exception) as info:
        services.version_create(template=sms, actor="user:a", language="en", text="x", html="y")
    assert info.value.fields == {"html": ["A sms template has no html."]}


def test_draft_with_bad_syntax_or_payload_is_refused_with_field_and_line(templates):
    template = templates.create(channel="email")
    with pytest.raises(errors.TemplateSyntaxError) as info:
        services.version_create(
            template=template, actor="user:a", language="en", subject="ok", html="<p>\n{% if %}"
        )
    assert info.value.field == "html" and info.value.line == 2
    with pytest.raises(errors.TemplateSecurityError) as info:
        services.version_create(
            template=template,
            actor="user:a",
            language="en",
            subject="{{ ''.__class__ }}",
            html="<p>x</p>",
        )
    assert info.value.field == "subject"


def test_review_flow_and_four_eyes(templates):
    template = templates.create(variables=NAME)
    version = services.version_create(
        template=template, actor="service:cms", language="en", text="Hi {{ name }}"
    )
    services.version_submit(version=version, actor="service:cms")
    with pytest.raises(errors.FourEyesError) as info:
        services.version_approve(version=version, actor="service:cms")
    assert info.value.status_code == 403
    assert info.value.code == "approval_by_author"
    version.refresh_from_db()
    assert version.status == VersionStatus.PENDING and not version.is_live

    approved = services.version_approve(version=version, actor="user:bob", note="LGTM")
    assert approved.status == VersionStatus.APPROVED and approved.is_live
    assert approved.approved_by == "user:bob" and approved.review_note == "LGTM"


def test_the_submitter_cannot_approve_either(templates):
    template = templates.create(variables=NAME)
    version = services.version_create(template=template, actor="user:a", language="en", text="x")
    services.version_submit(version=version, actor="user:b")
    with pytest.raises(errors.FourEyesError):
        services.version_approve(version=version, actor="user:b")


def test_actor_strings(make_user_token):
    assert services.actor_of(ServicePrincipal("cms")) == "service:cms"
    assert services.actor_of(User(external_id="alice")) == "user:alice"
    assert services.actor_of(User(username="admin")) == "staff:admin"


def test_reject_sends_back_to_draft_with_the_note(templates):
    template = templates.create(variables=NAME)
    version = services.version_create(template=template, actor="user:a", language="en", text="x")
    services.version_submit(version=version, actor="user:a")
    rejected = services.version_reject(version=version, actor="user:b", note="Typo")
    assert rejected.status == VersionStatus.DRAFT
    assert (rejected.rejected_by, rejected.review_note) == ("user:b", "Typo")
    services.version_update(version=rejected, actor="user:a", text="fixed")
    assert TemplateVersion.objects.get(pk=version.pk).text == "fixed"


def test_transitions_out_of_order_are_conflicts(templates):
    template = templates.create(variables=NAME)
    version = services.version_create(template=template, actor="user:a", language="en", text="x")
    with pytest.raises(errors.InvalidTransitionError) as info:
        services.version_approve(version=version, actor="user:b")
    assert info.value.status_code == 409


def test_approved_versions_are_immutable(templates):
    template = templates.create(variables=NAME)
    version = templates.live(template, text="Hi {{ name }}")
    with pytest.raises(ConflictError) as info:
        services.version_update(version=version, actor="user:a", text="changed")
    assert info.value.code == "version_immutable"


def test_submit_renders_with_the_examples(templates):
    template = templates.create(variables=NAME)
    version = services.version_create(
        template=template, actor="user:a", language="en", text="Hi {{ nickname }}"
    )
    with pytest.raises(errors.MissingVariableError) as info:
        services.version_submit(version=version, actor="user:a")
    assert info.value.variable == "nickname"
    version.refresh_from_db()
    assert version.status == VersionStatus.DRAFT


# -------------------------------------------------------------------------- live and rollback


def test_one_live_version_per_language_is_a_database_rule(templates):
    template = templates.create(variables=NAME)
    first = templates.live(template, text="one")
    second = templates.live(template, text="two")
    first.refresh_from_db()
    assert not first.is_live and first.status == VersionStatus.APPROVED
    assert second.is_live
    with pytest.raises(IntegrityError), transaction.atomic():
        TemplateVersion.objects.filter(pk=first.pk).update(is_live=True)


def test_a_draft_cannot_be_live(templates):
    template = templates.create(variables=NAME)
    version = services.version_create(template=template, actor="user:a", language="en", text="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        TemplateVersion.objects.filter(pk=version.pk).update(is_live=True)


def test_reserved_keys_are_refused_by_the_database(templates):
    category = Category.objects.get(key="system")
    with pytest.raises(IntegrityError), transaction.atomic():
        Template.objects.create(key="render", name="x", category=category, channel="sms")


def test_rollback_changes_what_render_returns(templates, committing):
    template = templates.create(variables=NAME)
    first = templates.live(template, text="Version one for {{ name }}")
    templates.live(template, text="Version two for {{ name }}")
    assert render()["text"] == "Version two for Ada"

    with committing():
        services.template_rollback(template=template, version_id=first.pk, actor="user:ops")
    result = render()
    assert result["text"] == "Version one for Ada"
    assert result["version"] == str(first.pk) and result["version_number"] == 1


def test_rollback_refuses_drafts_other_templates_and_wrong_language(templates):
    template = templates.create(variables=NAME)
    other = templates.create(key="other", variables=NAME)
    draft = services.version_create(template=template, actor="user:a", language="en", text="x")
    foreign = templates.live(other, text="y")
    for version_id, language, code in (
        (draft.pk, None, "invalid_transition"),
        (foreign.pk, None, "version_mismatch"),
    ):
        with pytest.raises(ConflictError) as info:
            services.template_rollback(
                template=template, version_id=version_id, language=language, actor="user:a"
            )
        assert info.value.code == code
    live = templates.live(template, text="z")
    with pytest.raises(ConflictError) as info:
        services.template_rollback(
            template=template, version_id=live.pk, language="fr", actor="user:a"
        )
    assert info.value.code == "language_mismatch"


def test_archive_only_what_is_not_live(templates):
    template = templates.create(variables=NAME)
    old = templates.live(template, text="one")
    new = templates.live(template, text="two")
    with pytest.raises(ConflictError):
        services.version_archive(version=new, actor="user:a")
    assert services.version_archive(version=old, actor="user:a").status == VersionStatus.ARCHIVED
    with pytest.raises(ConflictError):
        services.template_rollback(template=template, version_id=old.pk, actor="user:a")


# ------------------------------------------------------------------------------- the caches


def test_sources_are_cached_and_the_cache_invalidated_on_approve(templates, committing):
    template = templates.create(variables=NAME)
    templates.live(template, text="Old {{ name }}")
    counter = selectors.source_cache_counter
    counter.reset()

    assert render()["text"] == "Old Ada"
    assert (counter.hits, counter.misses) == (0, 1)
    assert render()["text"] == "Old Ada"
    assert (counter.hits, counter.misses) == (1, 1)

    templates.live(template, text="New {{ name }}")  # approve runs its on_commit callbacks
    assert render()["text"] == "New Ada"
    assert (counter.hits, counter.misses) == (1, 2)
    assert services.cache_stats()["sources"]["hit_rate"] == pytest.approx(1 / 3)


def test_cache_is_not_invalidated_before_commit(templates, django_capture_on_commit_callbacks):
    """Invalidation waits for the commit: a rolled-back approval leaves the cache alone."""
    template = templates.create(variables=NAME)
    templates.live(template, text="Old {{ name }}")
    render()
    version = services.version_create(template=template, actor="user:a", language="en", text="N")
    services.version_submit(version=version, actor="user:a")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.version_approve(version=version, actor="user:b")
    assert len(callbacks) == 1
    assert render()["text"] == "Old Ada"  # the commit has not happened yet
    callbacks[0]()
    assert render()["text"] == "N"


def test_a_stale_bundle_written_after_invalidation_is_ignored(templates):
    """A render that read the database before an approval committed, and writes its bundle
    after the invalidation, must not serve the old sources for the whole TTL."""

    template = templates.create(variables=NAME)
    templates.live(template, text="Old {{ name }}")
    stale = selectors.bundle_build(template.key)
    stale["generation"] = 0
    templates.live(template, text="New {{ name }}")  # commits: the generation moves on
    cache.set(selectors.bundle_cache_key(template.key), stale)  # the late writer
    assert render()["text"] == "New Ada"
    assert selectors.source_cache_counter.misses >= 1


def test_compiled_templates_are_reused_per_version(templates):
    template = templates.create(variables=NAME)
    templates.live(template, text="Hi {{ name }}")
    engine.compiled_cache.clear()
    render()
    render(data={"name": "Bob"})
    stats = engine.compiled_cache.stats()
    assert (stats["misses"], stats["hits"]) == (1, 1)


def test_template_update_invalidates(templates, committing):
    template = templates.create(variables=NAME)
    templates.live(template, text="Hi {{ name }}")
    render()
    with committing():
        services.template_update(template=template, actor="user:a", active=False)
    with pytest.raises(ConflictError) as info:
        render()
    assert info.value.code == "template_inactive"


# -------------------------------------------------------------------------------- languages


@pytest.fixture
def multilingual(templates):
    template = templates.create(variables=NAME, default_language="en")
    templates.live(template, language="en", text="Hello {{ name }}")
    templates.live(template, language="fr", text="Bonjour {{ name }}")
    templates.live(template, language="fr-CA", text="Allô {{ name }}")
    templates.live(template, language="de", text="Hallo {{ name }}")
    return template


@pytest.mark.parametrize(
    ("locale", "language", "text"),
    [
        ("fr-CA", "fr-CA", "Allô Ada"),
        ("fr-FR", "fr", "Bonjour Ada"),
        ("fr_be", "fr", "Bonjour Ada"),
        ("fr", "fr", "Bonjour Ada"),
        ("de-AT", "de", "Hallo Ada"),
        ("es", "en", "Hello Ada"),
        ("ja-JP", "en", "Hello Ada"),
        (None, "en", "Hello Ada"),
    ],
)
def test_language_fallback_chain(multilingual, locale, language, text):
    result = render(locale=locale)
    assert (result["language"], result["text"]) == (language, text)


def test_fallback_to_the_default_language_of_the_template(templates):
    template = templates.create(variables=NAME, default_language="de")
    templates.live(template, language="de", text="Hallo {{ name }}")
    assert render(locale="fr-CA")["text"] == "Hallo Ada"


def test_no_live_version_in_the_chain_is_404(templates):
    template = templates.create(variables=NAME, default_language="en")
    templates.live(template, language="fr", text="Bonjour")
    with pytest.raises(errors.NoLiveVersionError) as info:
        render(locale="de")
    assert info.value.status_code == 404
    assert "de, en" in str(info.value.detail)


def test_recipient_profile_gives_locale_and_timezone(multilingual, make_user_token, templates):
    make_user_token("zoe", locale="de-DE", timezone="Europe/Berlin")
    template = templates.create(
        key="when",
        variables=[{"name": "at", "type": "datetime", "example": "2026-03-01T23:30:00Z"}],
    )
    templates.live(template, language="en", text="{{ at|datetime('short') }}")
    assert render(recipient="zoe")["text"] == "Hallo Ada"
    result = render("when", data={"at": "2026-03-01T23:30:00Z"}, recipient="zoe")
    assert result["text"] == "02.03.26, 00:30"
    assert result["language"] == "en"  # the only version, formatted for the German reader


# -------------------------------------------------------------------------------- variables


def test_missing_and_invalid_variables(templates):
    template = templates.create(
        variables=[
            *NAME,
            {"name": "total", "type": "number", "required": True},
            {"name": "due", "type": "date", "required": False},
        ]
    )
    templates.live(template, text="{{ name }} {{ total|currency('EUR') }}")
    with pytest.raises(errors.MissingVariableError) as info:
        render(data={"name": "Ada"})
    assert info.value.variable == "total"
    assert "'total'" in str(info.value.detail)
    with pytest.raises(errors.InvalidVariableError) as info:
        render(data={"name": "Ada", "total": "lots"})
    assert info.value.fields == {"total": ["'total' must be a number."]}
    with pytest.raises(errors.InvalidVariableError):
        render(data={"name": "Ada", "total": 1, "due": "tomorrow"})
    result = render(data={"name": "Ada", "total": "12.5", "extra": 1})
    assert result["text"] == "Ada €12.50"
    assert result["warnings"] == ["Variable 'extra' is not declared by the template."]


# -------------------------------------------------------------------------------- variants


def _with_variants(templates, weights: dict[str, int]):
    template = templates.create(key="ab", variables=NAME)
    templates.live(template, text="control")
    for key, weight in weights.items():
        variant = services.variant_save(
            variant=TemplateVariant(template=template, key=key, weight=weight)
        )
        templates.live(template, variant=variant, text=f"variant {key}")
    return template


def test_variant_assignment_is_stable_and_follows_the_weights(templates):
    template = _with_variants(templates, {"a": 70, "b": 20, "c": 10})
    bundle = selectors.bundle_get(template.key)
    counts = collections.Counter(
        services.variant_assign("ab", f"user-{i}", bundle["variants"]) for i in range(10_000)
    )
    assert set(counts) == {"a", "b", "c"}
    for key, weight in (("a", 0.70), ("b", 0.20), ("c", 0.10)):
        assert abs(counts[key] / 10_000 - weight) < 0.02, counts
    # The same recipient always lands in the same arm, in this process or any other.
    for i in range(200):
        first = services.variant_assign("ab", f"user-{i}", bundle["variants"])
        assert services.variant_assign("ab", f"user-{i}", list(reversed(bundle["variants"]))) == (
            first
        )


def test_render_uses_the_recipients_variant_and_says_which(templates):
    _with_variants(templates, {"a": 1, "b": 1})
    seen = {}
    for i in range(50):
        result = render("ab", recipient=f"user-{i}")
        assert result["text"] == f"variant {result['variant']}"
        seen.setdefault(f"user-{i}", result["variant"])
        assert render("ab", recipient=f"user-{i}")["variant"] == seen[f"user-{i}"]
    assert set(seen.values()) == {"a", "b"}
    without = render("ab")
    assert (without["variant"], without["text"]) == (None, "control")


def test_assignment_depends_on_the_template_too():
    arms = [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}]
    same = sum(
        services.variant_assign("one", f"u{i}", arms)
        == services.variant_assign("two", f"u{i}", arms)
        for i in range(1000)
    )
    assert 400 < same < 600


def test_a_variant_without_versions_is_deleted(templates):
    template = _with_variants(templates, {"a": 1})
    spare = services.variant_save(variant=TemplateVariant(template=template, key="spare", weight=5))
    services.variant_delete(variant=spare)
    assert not TemplateVariant.objects.filter(key="spare").exists()


def test_a_variant_with_versions_is_not_deleted(templates):
    template = _with_variants(templates, {"a": 1})
    variant = TemplateVariant.objects.get(template=template, key="a")
    with pytest.raises(ConflictError):
        services.variant_delete(variant=variant)
    assert TemplateVariant.objects.filter(pk=variant.pk).exists()
