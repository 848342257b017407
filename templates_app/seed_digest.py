"""The seeded ``digest`` family (``templates_app.seed``): held notifications gathered in one
message, grouped by category, newest first, with how many were left out."""

from __future__ import annotations

from templates_app.seed_parts import ACTION, button, var

_ENTRIES_EXAMPLE = [
    {
        "title": "Quarterly report published",
        "summary": "Revenue up 12%.",
        "url": "https://example.com/r/1",
    },
    {"title": "New comment on your task", "summary": "Bob: looks good!", "url": ""},
]


_GROUPS_EXAMPLE = [
    {"category": "activity", "name": "Activity", "entries": _ENTRIES_EXAMPLE},
]


def _entry() -> str:
    return (
        "<li><p><strong>"
        '{% if entry.url %}<a href="{{ entry.url }}">{{ entry.title }}</a>'
        "{% else %}{{ entry.title }}{% endif %}</strong>"
        "{% if entry.summary %}<br>{{ entry.summary }}{% endif %}</p></li>\n"
    )


def _digest_list(more: str) -> str:
    """The items grouped by category (a digest of held notifications), or the flat ``entries``
    a caller of the family gives; then how many were left out."""
    return (
        "{% if groups is defined %}{% for group in groups %}<h2>{{ group.name }}</h2>\n<ul>\n"
        "{% for entry in group.entries %}" + _entry() + "{% endfor %}</ul>\n{% endfor %}"
        "{% else %}<ul>\n{% for entry in entries %}" + _entry() + "{% endfor %}</ul>\n"
        "{% endif %}"
        "{% set left_out = more if more is defined else unread_count - entries|length %}"
        '{% if left_out > 0 %}<p class="muted">' + more + "</p>{% endif %}\n"
    )


def _digest_texts(
    *, subject: str, heading: str, intro: str, more: str, see: str, title: str, body: str, sms: str
) -> dict[str, str]:
    return {
        "subject": subject,
        "content": f"<h1>{heading}</h1>\n<p>{intro}</p>\n" + _digest_list(more) + button(see),
        "sms": sms,
        "title": title,
        "body": body,
    }


_LATEST = "{% if entries %} {{ entries[0].title|truncate(80) }}{% endif %}"

# The digest's window in its intro: one day when it starts and ends on the same date (an hourly
# digest, quiet hours), else both ends.
_SPAN = (
    "{{% if period_start|date('long') == period_end|date('long') %}}{on}"
    "{{% else %}}{between}{{% endif %}}"
)


def _span(on: str, between: str) -> str:
    dates = {"s": "{{ period_start|date('long') }}", "e": "{{ period_end|date('long') }}"}
    return _SPAN.format(on=on.format(**dates), between=between.format(**dates))


DIGEST = {
    "base": "digest",
    "name": "Digest",
    "category": "activity",
    "description": "A periodic summary of what happened: the notifications a user chose to "
    "receive together, grouped by category, newest first.",
    "variables": [
        var("name", example="Ada", required=False, description="The recipient's first name"),
        var("period_start", "date", "2026-02-23"),
        var("period_end", "date", "2026-03-01"),
        var("entries", "list", _ENTRIES_EXAMPLE, description="[{title, summary, url}]"),
        var(
            "groups",
            "list",
            _GROUPS_EXAMPLE,
            required=False,
            description="[{category, name, entries}], the entries grouped by category",
        ),
        var("unread_count", "integer", 5, description="How many items the digest gathers"),
        var("more", "integer", 3, required=False, description="How many are not listed"),
        ACTION,
    ],
    "channels": ("email", "sms", "push", "in_app"),
    "texts": {
        "en": _digest_texts(
            subject="Your digest: {{ unread_count|number }} "
            "{{ 'update' if unread_count == 1 else 'updates' }}",
            heading="What you missed",
            intro="Hello{% if name is defined and name %} {{ name }}{% endif %}, here is what "
            "happened " + _span(on="on {s}", between="between {s} and {e}") + ".",
            more="And {{ left_out }} more.",
            see="See everything",
            title="Your digest",
            body="{{ unread_count|number }} updates since {{ period_start|date('medium') }}",
            sms="Your digest: {{ unread_count }} updates." + _LATEST,
        ),
        "fr": _digest_texts(
            subject="Votre résumé : {{ unread_count|number }} "
            "{{ 'nouveauté' if unread_count == 1 else 'nouveautés' }}",
            heading="Ce que vous avez manqué",
            intro="Bonjour{% if name is defined and name %} {{ name }}{% endif %}, voici ce qui "
            "s'est passé " + _span(on="le {s}", between="entre le {s} et le {e}") + ".",
            more="Et {{ left_out }} de plus.",
            see="Tout voir",
            title="Votre résumé",
            body="{{ unread_count|number }} nouveautés depuis le {{ period_start|date('medium') }}",
            sms="Votre résumé : {{ unread_count }} nouveautés." + _LATEST,
        ),
        "es": _digest_texts(
            subject="Su resumen: {{ unread_count|number }} "
            "{{ 'novedad' if unread_count == 1 else 'novedades' }}",
            heading="Lo que se ha perdido",
            intro="Hola{% if name is defined and name %} {{ name }}{% endif %}, esto es lo que "
            "pasó " + _span(on="el {s}", between="entre el {s} y el {e}") + ".",
            more="Y {{ left_out }} más.",
            see="Ver todo",
            title="Su resumen",
            body="{{ unread_count|number }} novedades desde el {{ period_start|date('medium') }}",
            sms="Su resumen: {{ unread_count }} novedades." + _LATEST,
        ),
        "de": _digest_texts(
            subject="Ihre Zusammenfassung: {{ unread_count|number }} "
            "{{ 'Neuigkeit' if unread_count == 1 else 'Neuigkeiten' }}",
            heading="Was Sie verpasst haben",
            intro="Hallo{% if name is defined and name %} {{ name }}{% endif %}, das ist "
            + _span(on="am {s}", between="zwischen dem {s} und dem {e}")
            + " passiert.",
            more="Und {{ left_out }} weitere.",
            see="Alles ansehen",
            title="Ihre Zusammenfassung",
            body="{{ unread_count|number }} Neuigkeiten seit dem {{ period_start|date('medium') }}",
            sms="Ihre Zusammenfassung: {{ unread_count }} Neuigkeiten." + _LATEST,
        ),
    },
}
