"""SMS encoding detection and segment counts, at the boundaries."""

from __future__ import annotations

import pytest

from templates_app import engine, errors
from templates_app.sms import normalize, sms_info


@pytest.mark.parametrize(
    ("text", "encoding", "characters", "units", "segments"),
    [
        ("", "GSM-7", 0, 0, 0),
        ("Hello", "GSM-7", 5, 5, 1),
        ("a" * 160, "GSM-7", 160, 160, 1),
        ("a" * 161, "GSM-7", 161, 161, 2),
        ("a" * 306, "GSM-7", 306, 306, 2),
        ("a" * 307, "GSM-7", 307, 307, 3),
        # Extension characters take two septets.
        ("€" * 80, "GSM-7", 80, 160, 1),
        ("€" * 81, "GSM-7", 81, 162, 2),
        ("a" * 159 + "€", "GSM-7", 160, 161, 2),
        ("[]{}|^~\\", "GSM-7", 8, 16, 1),
        # An escape pair never straddles two segments: 152 septets, then € starts the second.
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 163, 164, 2),
        # Accents of the GSM-7 alphabet stay GSM-7.
        ("Ça coûte 5€ à Zürich, señor", "UCS-2", 27, 27, 1),
        ("éèùìòÇØøÅåÆæßÉÄÖÑÜäöñüà¡¿£¥§", "GSM-7", 28, 28, 1),
        ("ü" * 160, "GSM-7", 160, 160, 1),
        # Anything else: UCS-2.
        ("ç" + "a" * 69, "UCS-2", 70, 70, 1),
        ("ç" + "a" * 70, "UCS-2", 71, 71, 2),
        ("я" * 70, "UCS-2", 70, 70, 1),
        ("я" * 71, "UCS-2", 71, 71, 2),
        ("я" * 134, "UCS-2", 134, 134, 2),
        ("я" * 135, "UCS-2", 135, 135, 3),
        # An emoji is two UTF-16 code units, kept in one segment.
        ("😀" * 35, "UCS-2", 35, 70, 1),
        ("😀" * 36, "UCS-2", 36, 72, 2),
        ("a" * 66 + "😀", "UCS-2", 67, 68, 1),
        # … and never split: 66 + 2 > 67, so the pair opens the second segment.
        ("a" * 66 + "😀" + "a" * 66, "UCS-2", 133, 134, 3),
    ],
)
def test_sms_info(text, encoding, characters, units, segments):
    assert sms_info(text) == {
        "encoding": encoding,
        "characters": characters,
        "units": units,
        "segments": segments,
    }


@pytest.mark.parametrize(("length", "segments"), [(160, 1), (161, 2)])
def test_gsm7_boundary_through_the_renderer(length, segments):
    rendered = engine.render_fields(
        channel="sms", sources={"text": "{{ 'a' * n }}"}, context={"n": length}
    )
    assert rendered.sms == {
        "encoding": "GSM-7",
        "characters": length,
        "units": length,
        "segments": segments,
    }
    assert rendered.warnings == []


@pytest.mark.parametrize(("length", "segments"), [(70, 1), (71, 2)])
def test_ucs2_boundary_through_the_renderer(length, segments):
    rendered = engine.render_fields(
        channel="sms", sources={"text": "Ω{{ 'ж' * (n - 1) }}"}, context={"n": length}
    )
    assert rendered.sms == {
        "encoding": "UCS-2",
        "characters": length,
        "units": length,
        "segments": segments,
    }
    assert "outside GSM-7 (ж)" in rendered.warnings[0]


def test_typographic_spaces_from_locale_filters_do_not_force_ucs2():
    rendered = engine.render_fields(
        channel="sms",
        sources={"text": "Total : {{ amount|currency('EUR') }} ({{ 0.2|percent }})"},
        context={"amount": "1234.5"},
        locale="fr",
    )
    assert rendered.fields["text"] == "Total : 1 234,50 € (20 %)"
    assert rendered.sms["encoding"] == "GSM-7"
    typographic = "\u201cQuoted\u201d \u2013 it\u2019s\u2026"
    assert normalize(typographic) == '"Quoted" - it\'s...'


def test_max_segments_is_a_warning_in_preview_and_an_error_for_a_send(settings):
    settings.TEMPLATES_SMS_MAX_SEGMENTS = 2
    sources = {"text": "{{ 'a' * 400 }}"}
    rendered = engine.render_fields(channel="sms", sources=sources, context={})
    assert rendered.sms["segments"] == 3
    assert rendered.warnings == ["The SMS takes 3 segments; at most 2."]
    with pytest.raises(errors.RenderLimitError) as info:
        engine.render_fields(channel="sms", sources=sources, context={}, enforce_sms_limit=True)
    assert info.value.code == "render_limit"
    # A template's own maximum wins over the setting.
    rendered = engine.render_fields(
        channel="sms", sources=sources, context={}, sms_max_segments=3, enforce_sms_limit=True
    )
    assert rendered.warnings == []
