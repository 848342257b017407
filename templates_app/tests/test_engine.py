"""The rendering engine: locale filters, strict variables, escaping, email post-processing,
the sandbox against known template-injection payloads, and the resource limits."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from templates_app import engine, errors

NBSP, NNBSP = "\u00a0", "\u202f"

CONTEXT = {
    "day": dt.date(2026, 3, 1),
    # 23:30 UTC: the next day in Paris and Berlin, the same day in New York and Montreal.
    "moment": dt.datetime(2026, 3, 1, 23, 30, tzinfo=dt.UTC),
    "amount": Decimal("1234.5"),
    "ratio": 0.256,
    "seconds": 7200,
}


def body(source: str, *, locale="en", timezone="UTC", context=None, **kwargs) -> str:
    rendered = engine.render_fields(
        channel="in_app",
        sources={"title": "", "body": source},
        context=CONTEXT if context is None else context,
        locale=locale,
        timezone=timezone,
        **kwargs,
    )
    return rendered.fields["body"]


def fails(source: str, **kwargs) -> errors.TemplateError:
    with pytest.raises(errors.TemplateError) as info:
        body(source, **kwargs)
    return info.value


# ------------------------------------------------------------------------ filters and locales

FILTER_CASES = [
    # filter, locale, time zone, expected
    ("{{ day|date }}", "en", "UTC", "Mar 1, 2026"),
    ("{{ day|date }}", "fr", "Europe/Paris", "1 mars 2026"),
    ("{{ day|date }}", "es", "Europe/Madrid", "1 mar 2026"),
    ("{{ day|date }}", "de", "Europe/Berlin", "01.03.2026"),
    ("{{ day|date('full') }}", "en", "UTC", "Sunday, March 1, 2026"),
    ("{{ day|date('full') }}", "fr", "UTC", "dimanche 1 mars 2026"),
    ("{{ day|date('full') }}", "es", "UTC", "domingo, 1 de marzo de 2026"),
    ("{{ day|date('full') }}", "de", "UTC", "Sonntag, 1. März 2026"),
    ("{{ day|date('d MMM') }}", "de", "UTC", "1 März"),
    # A datetime's date is the date where the recipient is.
    ("{{ moment|date }}", "en-US", "America/New_York", "Mar 1, 2026"),
    ("{{ moment|date }}", "fr", "Europe/Paris", "2 mars 2026"),
    ("{{ moment|time }}", "en", "UTC", f"11:30{NNBSP}PM"),
    ("{{ moment|time }}", "en-US", "America/New_York", f"6:30{NNBSP}PM"),
    ("{{ moment|time }}", "fr", "Europe/Paris", "00:30"),
    ("{{ moment|time }}", "fr-CA", "America/Montreal", "18 h 30"),
    ("{{ moment|time }}", "es", "Europe/Madrid", "0:30"),
    ("{{ moment|time }}", "de", "Europe/Berlin", "00:30"),
    ("{{ moment|datetime('short') }}", "en", "UTC", f"3/1/26, 11:30{NNBSP}PM"),
    ("{{ moment|datetime('short') }}", "fr", "Europe/Paris", "02/03/2026 00:30"),
    ("{{ moment|datetime('short') }}", "fr-CA", "America/Montreal", "2026-03-01 18 h 30"),
    ("{{ moment|datetime('short') }}", "es", "Europe/Madrid", "2/3/26, 0:30"),
    ("{{ moment|datetime('short') }}", "de", "Europe/Berlin", "02.03.26, 00:30"),
    ("{{ amount|number }}", "en", "UTC", "1,234.5"),
    ("{{ amount|number }}", "fr", "UTC", f"1{NNBSP}234,5"),
    ("{{ amount|number }}", "fr-CA", "UTC", f"1{NBSP}234,5"),
    ("{{ amount|number }}", "es", "UTC", "1.234,5"),
    ("{{ amount|number }}", "de", "UTC", "1.234,5"),
    ("{{ amount|number(2) }}", "en", "UTC", "1,234.50"),
    ("{{ amount|number(2) }}", "de", "UTC", "1.234,50"),
    ("{{ 3|number(0) }}", "fr", "UTC", "3"),
    ("{{ amount|currency('EUR') }}", "en", "UTC", "€1,234.50"),
    ("{{ amount|currency('EUR') }}", "fr", "UTC", f"1{NNBSP}234,50{NBSP}€"),
    ("{{ amount|currency('EUR') }}", "es", "UTC", f"1.234,50{NBSP}€"),
    ("{{ amount|currency('EUR') }}", "de", "UTC", f"1.234,50{NBSP}€"),
    ("{{ amount|currency('USD') }}", "en", "UTC", "$1,234.50"),
    ("{{ amount|currency('USD') }}", "fr-CA", "UTC", f"1{NBSP}234,50{NBSP}${NBSP}US"),
    ("{{ '12.5'|currency('eur') }}", "de", "UTC", f"12,50{NBSP}€"),
    ("{{ ratio|percent }}", "en", "UTC", "26%"),
    ("{{ ratio|percent }}", "fr", "UTC", f"26{NBSP}%"),
    ("{{ ratio|percent(1) }}", "de", "UTC", f"25,6{NBSP}%"),
    ("{{ seconds|timedelta }}", "en", "UTC", "2 hours"),
    ("{{ seconds|timedelta }}", "es", "UTC", "2 horas"),
    ("{{ seconds|timedelta }}", "de", "UTC", "2 Stunden"),
    ("{{ seconds|timedelta(add_direction=true) }}", "fr", "UTC", "dans 2 heures"),
]


@pytest.mark.parametrize(("source", "locale", "timezone", "expected"), FILTER_CASES)
def test_locale_filters(source, locale, timezone, expected):
    assert body(source, locale=locale, timezone=timezone) == expected


def test_filters_accept_iso_strings_from_unschematised_drafts():
    context = {"when": "2026-03-01T23:30:00Z", "day": "2026-03-01", "price": "9.90"}
    assert body("{{ when|datetime('short') }}", locale="de", context=context) == "01.03.26, 23:30"
    assert body("{{ day|date('long') }}", locale="fr", context=context) == "1 mars 2026"
    assert body("{{ price|currency('EUR') }}", locale="en", context=context) == "€9.90"


def test_a_locale_babel_does_not_know_falls_back_to_its_language():
    assert body("{{ amount|number }}", locale="de-XX") == "1.234,5"
    assert body("{{ amount|number }}", locale="xx") == "1,234.5"


def test_a_bad_currency_or_value_is_invalid_variable():
    assert fails("{{ amount|currency('EURO') }}").code == "invalid_variable"
    error = fails("{{ word|number }}", context={"word": "many"})
    assert error.code == "invalid_variable"
    assert "line 1" in str(error.detail)


def test_a_locale_filter_is_never_folded_at_compile_time():
    """Compiled once per version, rendered for every locale: a literal must follow the locale."""
    source = "{{ 1234.5|number }} {{ '2026-03-01'|date('long') }}"
    cache_key = "shared-version"
    assert body(source, locale="en", cache_key=cache_key) == "1,234.5 March 1, 2026"
    assert body(source, locale="de", cache_key=cache_key) == "1.234,5 1. März 2026"
    assert engine.compiled_cache.hits >= 1


# ------------------------------------------------------------------------ strict variables


def test_missing_variable_names_the_variable():
    error = fails("Hello {{ first_name }}!", context={})
    assert error.code == "missing_variable"
    assert error.variable == "first_name"
    assert "'first_name'" in str(error.detail)
    assert error.fields == {"first_name": ["This variable is required."]}


def test_missing_attribute_names_it_and_the_line():
    error = fails("Line one\n{{ order.total }}", context={"order": {"id": 1}})
    assert error.code == "missing_variable"
    assert error.variable == "total"
    assert "line 2" in str(error.detail)


def test_missing_variable_inside_a_loop_or_an_operation():
    assert fails("{% for x in things %}{{ x }}{% endfor %}", context={}).variable == "things"
    assert fails("{{ count + 1 }}", context={}).variable == "count"


def test_defined_test_and_default_filter_still_work():
    source = "{% if coupon is defined %}{{ coupon }}{% else %}none{% endif %} {{ x|default('-') }}"
    assert body(source, context={}) == "none -"


def test_dict_keys_win_over_dict_methods():
    assert body("{{ order.items|length }}", context={"order": {"items": [1, 2, 3]}}) == "3"


def test_none_renders_empty():
    assert body("[{{ nothing }}]", context={"nothing": None}) == "[]"


# ------------------------------------------------------------------------------- escaping


def test_html_is_autoescaped_and_text_is_not():
    rendered = engine.render_fields(
        channel="email",
        sources={
            "subject": "Hi {{ name }}",
            "html": "<p>Hi {{ name }}</p>",
            "text": "Hi {{ name }}",
        },
        context={"name": "<b>Bob</b> & co"},
    )
    assert "&lt;b&gt;Bob&lt;/b&gt; &amp; co" in rendered.fields["html"]
    assert rendered.fields["subject"] == "Hi <b>Bob</b> & co"
    assert rendered.fields["text"] == "Hi <b>Bob</b> & co"


def test_concatenation_in_html_still_escapes():
    rendered = engine.render_fields(
        channel="email",
        sources={"subject": "s", "html": "<p>{{ a ~ b }}</p>"},
        context={"a": "<i>", "b": "</i>"},
    )
    assert "&lt;i&gt;&lt;/i&gt;" in rendered.fields["html"]


def test_subject_is_one_line():
    rendered = engine.render_fields(
        channel="email",
        sources={"subject": "Hello\r\nBcc: victim@example.com {{ x }}", "html": "<p>x</p>"},
        context={"x": "\nmore"},
    )
    assert rendered.fields["subject"] == "Hello Bcc: victim@example.com more"


def test_email_css_is_inlined_and_text_generated():
    html = (
        "<html><head><style>p.lead { color: #123456; } @media (max-width: 600px) "
        "{ p { font-size: 12px; } }</style></head><body>"
        '<p class="lead">Hello {{ name }}</p>'
        "<ul>{% for i in items %}<li>{{ i }}</li>{% endfor %}</ul>"
        '<a href="https://example.com/x">Open</a></body></html>'
    )
    rendered = engine.render_fields(
        channel="email",
        sources={"subject": "s", "html": html},
        context={"name": "Ada", "items": ["one", "two"]},
    )
    out = rendered.fields["html"]
    assert '<p class="lead" style="color: #123456;">Hello Ada</p>' in out
    assert "@media" in out  # kept for the clients that read it
    text = rendered.fields["text"]
    assert "Hello Ada" in text
    assert "* one" in text and "* two" in text
    assert "[Open](https://example.com/x)" in text


def test_remote_stylesheets_are_not_fetched(httpserver):
    httpserver.expect_request("/evil.css").respond_with_data("p { color: red; }")
    html = f'<html><head><link rel="stylesheet" href="{httpserver.url_for("/evil.css")}"></head><body><p>x</p></body></html>'
    rendered = engine.render_fields(
        channel="email", sources={"subject": "s", "html": html}, context={}
    )
    assert "color: red" not in rendered.fields["html"]
    assert not httpserver.log


# -------------------------------------------------------------- server-side template injection

# Each payload is refused by the static check (template_security), before any rendering.
SSTI_PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ ''|attr('__class__')|attr('__mro__') }}",
    "{{ ()|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ ''['__class__'] }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ '{x.__class__}'.format_map({'x': ''}) }}",
    "{{ x|map(attribute='__class__')|list }}",
    "{% import 'os' as os %}{{ os.popen('id') }}",
    "{% from 'os' import popen %}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{{ _private }}",
    "{{ ''.__class__.mro() }}",
]


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_injection_payload_is_refused(payload):
    error = fails(payload, context={"x": ["a"]})
    assert error.code == "template_security", error.detail


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_injection_payload_is_refused_at_draft_time(payload):
    with pytest.raises(errors.TemplateSecurityError):
        engine.check_source(payload, html=False)


# Without the static check, the run-time sandbox refuses the same attempts on its own.
RUNTIME_PAYLOADS = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''|attr('__class__') }}",
    "{{ '{0.__class__}'.format('') }}",
    "{{ '{x}'.format_map({'x': 1}) }}",
    "{{ ''[('_' ~ '_class_' ~ '_')] }}",
    "{{ x|map(attribute='__class__')|join }}",
    "{{ '%c%c' % (95, 95) }}",
    "{{ [].pop() }}",
    "{{ {}.update(a=1) }}",
    "{{ (1).to_bytes(10, 'big') }}",
    "{{ 'a'.ljust(10) }}",
    "{{ 'a'.translate({}) }}",
]


@pytest.mark.parametrize("payload", RUNTIME_PAYLOADS)
def test_runtime_sandbox_refuses_without_the_static_check(payload):
    error = fails(payload, context={"x": ["a"]}, static_checks=False)
    assert error.code == "template_security", error.detail


def test_injection_via_data_is_just_text():
    """Data is never compiled: a payload in a variable is printed, escaped in HTML."""
    payload = "{{ ''.__class__ }}"
    assert body("{{ x }}", context={"x": payload}) == payload


def test_safe_string_methods_still_work():
    assert body("{{ name.upper() }} {{ name.split('a')|length }}", context={"name": "banana"}) == (
        "BANANA 4"
    )


# --------------------------------------------------------------------------------- limits

SMALL = engine.Limits(max_output=10_000, max_iterations=5_000, time_limit=0.5, max_range=1_000)

LIMIT_PAYLOADS = [
    "{{ 'x' * 100000000 }}",
    "{{ [1] * 100000000 }}",
    "{{ (9 ** 99) ** 99 }}",
    "{{ (10 ** 1000) * (10 ** 1000) }}",
    "{{ 2 ** 100000 }}",
    "{{ range(100000000)|list|length }}",
    "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
    "{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}",
    "{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ f('a', 60) }}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{{ 'a'|center(100000000) }}",
    "{{ 'a'|indent(100000000) }}",
    "{{ ('y' * 5000)|replace('', 'y' * 5000) }}",
    "{{ range(1000)|join('y' * 5000) }}",
    "{{ range(5)|batch(100000000, 'x')|list }}",
    "{{ range(5)|slice(100000000)|list }}",
    "{{ ('x ' * 2000)|wordwrap(1, wrapstring='y' * 5000) }}",
    "{{ ('x' * 4000) + ('x' * 7000) }}",
]


@pytest.mark.parametrize("payload", LIMIT_PAYLOADS)
def test_resource_abuse_is_a_render_limit(payload):
    error = fails(payload, context={}, limits=SMALL)
    assert error.code == "render_limit", error.detail


def test_render_time_is_limited_cooperatively():
    """No signals (workers render off the main thread): loops and calls check the deadline."""
    limits = engine.Limits(time_limit=0.2, max_iterations=10**9, max_range=10**6)
    source = "{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}"
    error = fails(source, context={}, limits=limits)
    assert error.code == "render_limit"
    assert "0.2 s" in str(error.detail)


def test_limits_allow_normal_templates():
    source = "{% for i in range(200) %}{{ i|number }},{% endfor %}"
    assert body(source, context={}, limits=SMALL).startswith("0,1,2,")


def test_limits_come_from_settings(settings):
    settings.TEMPLATES_MAX_RANGE = 10
    assert fails("{{ range(11)|list }}", context={}).code == "render_limit"
    assert body("{{ range(10)|list|length }}", context={}) == "10"


# --------------------------------------------------------------------------------- syntax


def test_syntax_error_names_the_line():
    with pytest.raises(errors.TemplateSyntaxError) as info:
        engine.check_source("ok\n{% if x %}\nno end", html=False)
    assert info.value.code == "template_syntax"
    assert info.value.line == 3


def test_unknown_filter_is_a_syntax_error():
    assert fails("{{ x|no_such_filter }}", context={"x": 1}).code == "template_syntax"


# --------------------------------------------------------------------------- language chain


@pytest.mark.parametrize(
    ("requested", "default", "chain"),
    [
        ("fr-CA", "en", ["fr-CA", "fr", "en"]),
        ("fr", "en", ["fr", "en"]),
        ("zh-Hant-TW", "en", ["zh-Hant-TW", "zh-Hant", "zh", "en"]),
        (None, "de", ["de"]),
        ("en-GB", "en", ["en-GB", "en"]),
        ("pt-BR", "pt-PT", ["pt-BR", "pt", "pt-PT"]),
    ],
)
def test_language_chain(requested, default, chain):
    assert engine.language_chain(requested, default) == chain


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", " JavaScript:alert(1)", "java\tscript:x", "data:text/html,x"]
)
def test_rendered_links_cannot_become_script(url):
    with pytest.raises(errors.TemplateSecurityError) as info:
        engine.render_fields(
            channel="in_app",
            sources={"title": "t", "body": "b", "action_url": "{{ link }}"},
            context={"link": url},
        )
    assert info.value.field == "action_url"
    rendered = engine.render_fields(
        channel="push",
        sources={"title": "t", "body": "b", "deep_link": "myapp://orders/{{ id }}"},
        context={"id": 7},
    )
    assert rendered.fields["deep_link"] == "myapp://orders/7"
