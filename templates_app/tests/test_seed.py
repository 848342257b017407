"""The seeded templates: every channel and language renders with its own examples."""

from __future__ import annotations

import pytest

from templates_app import seed, services
from templates_app.models import Template, TemplateVersion

pytestmark = pytest.mark.django_db

SEEDED = [
    (seed.template_key(spec["base"], channel), channel)
    for spec in seed.TEMPLATES
    for channel in spec["channels"]
]


def test_seed_covers_the_generic_set_in_four_languages():
    bases = {spec["base"] for spec in seed.TEMPLATES}
    assert bases == {
        "system-alert",
        "reminder",
        "status-update",
        "receipt",
        "announcement",
        "welcome",
        "digest",
    }
    assert Template.objects.filter(created_by=seed.SEED_ACTOR).count() == len(SEEDED)
    for key, _ in SEEDED:
        languages = set(
            TemplateVersion.objects.filter(template__key=key, is_live=True).values_list(
                "language", flat=True
            )
        )
        assert languages == {"en", "fr", "es", "de"}, key


@pytest.mark.parametrize(("key", "channel"), SEEDED)
@pytest.mark.parametrize("language", ["en", "fr", "es", "de"])
def test_seeded_template_renders(key, channel, language):
    result = services.template_preview(key=key, locale=language, timezone="Europe/Paris")
    assert result["language"] == language
    if channel == "email":
        assert result["subject"] and "{{" not in result["subject"]
        # Rules are inlined; only the @media query stays in a <style>.
        style = result["html"].split("<style>", 1)[1].split("</style>", 1)[0]
        assert style.strip().startswith("@media") and "background" not in style
        assert 'class="card" style="' in result["html"]
        assert "Ada" in result["text"]
    elif channel == "sms":
        assert result["sms"]["segments"] <= 2, result
        assert result["sms"]["encoding"] == "GSM-7", result
    else:
        assert result["title"] and result["body"]
    unexpected = [w for w in result["warnings"] if "not declared" in w]
    assert not unexpected


def test_seed_is_idempotent():
    assert seed.seed() == 0


@pytest.mark.parametrize(
    ("language", "one_day", "two_days"),
    [
        ("en", "happened on ", "happened between "),
        ("fr", "passé le ", "passé entre le "),
        ("es", "pasó el ", "pasó entre el "),
        ("de", "das ist am ", "zwischen dem "),
    ],
)
def test_the_digest_names_one_day_or_its_two_ends(language, one_day, two_days):
    def text(start: str, end: str) -> str:
        data = {"period_start": start, "period_end": end}
        return services.template_preview(
            key=seed.template_key("digest", "email"), data=data, locale=language
        )["text"]

    assert one_day in text("2026-03-01", "2026-03-01")
    assert two_days not in text("2026-03-01", "2026-03-01")
    assert two_days in text("2026-02-23", "2026-03-01")
