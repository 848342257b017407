"""Generic templates every deployment starts with, in English, French, Spanish and German.

``seed(apps)`` runs from a data migration with historical models and from
``manage.py seed_templates``; it only adds templates whose key does not exist yet, so an
operator's edits are never overwritten. Seeded versions are approved by ``system:seed``.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps as live_apps
from django.utils import timezone

LANGUAGES = ("en", "fr", "es", "de")
SEED_ACTOR = "system:seed"

# ------------------------------------------------------------------------------ email layout

STYLE = """
body { margin: 0; padding: 0; background: #f4f5f7; font-family: Helvetica, Arial, sans-serif;
       color: #1f2933; }
.wrapper { width: 100%; background: #f4f5f7; padding: 24px 0; }
.card { max-width: 600px; margin: 0 auto; background: #ffffff; border-radius: 6px;
        padding: 32px; }
h1 { font-size: 22px; margin: 0 0 16px; color: #111827; }
p { font-size: 15px; line-height: 1.5; margin: 0 0 14px; }
.muted { color: #6b7280; font-size: 13px; }
.badge { display: inline-block; padding: 2px 8px; border-radius: 10px; background: #fde68a;
         font-size: 12px; text-transform: uppercase; }
.button { display: inline-block; background: #2563eb; color: #ffffff; padding: 10px 18px;
          border-radius: 4px; text-decoration: none; font-weight: bold; }
table.items { width: 100%; border-collapse: collapse; margin: 8px 0 16px; }
table.items td, table.items th { padding: 8px 4px; border-bottom: 1px solid #e5e7eb;
                                 font-size: 14px; text-align: left; }
td.amount, th.amount { text-align: right; }
.footer { max-width: 600px; margin: 16px auto 0; text-align: center; color: #9ca3af;
          font-size: 12px; }
@media (max-width: 620px) { .card { padding: 16px; } }
""".strip()

FOOTER = {
    "en": "You receive this message because of your account settings.",
    "fr": "Vous recevez ce message en raison des paramètres de votre compte.",
    "es": "Recibe este mensaje por la configuración de su cuenta.",
    "de": "Sie erhalten diese Nachricht aufgrund Ihrer Kontoeinstellungen.",
}


def layout(language: str, content: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="{language}">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<style>\n{STYLE}\n</style>\n</head>\n<body>\n"
        f'<div class="wrapper">\n<div class="card">\n{content.strip()}\n</div>\n'
        f'<p class="footer">{FOOTER[language]}</p>\n</div>\n</body>\n</html>\n'
    )


def button(label: str, url_var: str = "action_url") -> str:
    return (
        f"{{% if {url_var} is defined and {url_var} %}}"
        f'<p><a class="button" href="{{{{ {url_var} }}}}">{label}</a></p>{{% endif %}}'
    )


# -------------------------------------------------------------------------------- variables


def var(name, type_="string", example=None, required=True, description=""):
    spec = {"name": name, "type": type_, "required": required}
    if example is not None:
        spec["example"] = example
    if description:
        spec["description"] = description
    return spec


NAME = var("name", example="Ada", description="The recipient's first name")
ACTION = var("action_url", "url", "https://example.com/account", required=False)

# ------------------------------------------------------------------------------- templates
# Each entry: key base, name, category, variables, channels, and per language the texts.

SYSTEM_ALERT = {
    "base": "system-alert",
    "name": "System alert",
    "category": "system",
    "description": "An incident, a maintenance window or a change that affects the user.",
    "variables": [
        NAME,
        var("title", example="Scheduled maintenance"),
        var("message", example="The service will be unavailable for 30 minutes."),
        var("severity", example="warning", description="info, warning or critical"),
        var("occurred_at", "datetime", "2026-03-01T09:30:00Z"),
        ACTION,
    ],
    "channels": ("email", "sms", "push", "in_app"),
    "texts": {
        "en": {
            "subject": "[{{ severity|upper }}] {{ title }}",
            "content": (
                '<p><span class="badge">{{ severity }}</span></p>\n<h1>{{ title }}</h1>\n'
                "<p>Hello {{ name }},</p>\n<p>{{ message }}</p>\n"
                '<p class="muted">Reported {{ occurred_at|datetime("long") }}.</p>\n'
                + button("View details")
            ),
            "sms": "{{ title }}: {{ message }}",
            "title": "{{ title }}",
            "body": "{{ message }}",
        },
        "fr": {
            "subject": "[{{ severity|upper }}] {{ title }}",
            "content": (
                '<p><span class="badge">{{ severity }}</span></p>\n<h1>{{ title }}</h1>\n'
                "<p>Bonjour {{ name }},</p>\n<p>{{ message }}</p>\n"
                '<p class="muted">Signalé le {{ occurred_at|datetime("long") }}.</p>\n'
                + button("Voir les détails")
            ),
            "sms": "{{ title }} : {{ message }}",
            "title": "{{ title }}",
            "body": "{{ message }}",
        },
        "es": {
            "subject": "[{{ severity|upper }}] {{ title }}",
            "content": (
                '<p><span class="badge">{{ severity }}</span></p>\n<h1>{{ title }}</h1>\n'
                "<p>Hola {{ name }}:</p>\n<p>{{ message }}</p>\n"
                '<p class="muted">Notificado el {{ occurred_at|datetime("long") }}.</p>\n'
                + button("Ver detalles")
            ),
            "sms": "{{ title }}: {{ message }}",
            "title": "{{ title }}",
            "body": "{{ message }}",
        },
        "de": {
            "subject": "[{{ severity|upper }}] {{ title }}",
            "content": (
                '<p><span class="badge">{{ severity }}</span></p>\n<h1>{{ title }}</h1>\n'
                "<p>Hallo {{ name }},</p>\n<p>{{ message }}</p>\n"
                '<p class="muted">Gemeldet am {{ occurred_at|datetime("long") }}.</p>\n'
                + button("Details ansehen")
            ),
            "sms": "{{ title }}: {{ message }}",
            "title": "{{ title }}",
            "body": "{{ message }}",
        },
    },
}

REMINDER = {
    "base": "reminder",
    "name": "Reminder",
    "category": "reminders",
    "description": "Something due soon: an appointment, a payment, a task.",
    "variables": [
        NAME,
        var("what", example="Dentist appointment"),
        var("due_at", "datetime", "2026-03-02T14:00:00Z"),
        var("location", example="12 Rue de la Paix", required=False),
        ACTION,
    ],
    "channels": ("email", "sms", "push", "in_app"),
    "texts": {
        "en": {
            "subject": "Reminder: {{ what }} on {{ due_at|date('medium') }}",
            "content": (
                "<h1>Reminder</h1>\n<p>Hello {{ name }},</p>\n"
                "<p><strong>{{ what }}</strong> is due on {{ due_at|date('full') }} at "
                "{{ due_at|time }}.</p>\n"
                "{% if location is defined and location %}<p>Where: {{ location }}</p>"
                "{% endif %}\n" + button("Open")
            ),
            "sms": "Reminder: {{ what }} on {{ due_at|date('short') }} at {{ due_at|time }}"
            "{% if location is defined and location %}, {{ location }}{% endif %}.",
            "title": "Reminder: {{ what }}",
            "body": "{{ due_at|date('medium') }} at {{ due_at|time }}",
        },
        "fr": {
            "subject": "Rappel : {{ what }} le {{ due_at|date('medium') }}",
            "content": (
                "<h1>Rappel</h1>\n<p>Bonjour {{ name }},</p>\n"
                "<p><strong>{{ what }}</strong> est prévu le {{ due_at|date('full') }} à "
                "{{ due_at|time }}.</p>\n"
                "{% if location is defined and location %}<p>Lieu : {{ location }}</p>"
                "{% endif %}\n" + button("Ouvrir")
            ),
            "sms": "Rappel : {{ what }} le {{ due_at|date('short') }} à {{ due_at|time }}"
            "{% if location is defined and location %}, {{ location }}{% endif %}.",
            "title": "Rappel : {{ what }}",
            "body": "{{ due_at|date('medium') }} à {{ due_at|time }}",
        },
        "es": {
            "subject": "Recordatorio: {{ what }} el {{ due_at|date('medium') }}",
            "content": (
                "<h1>Recordatorio</h1>\n<p>Hola {{ name }}:</p>\n"
                "<p><strong>{{ what }}</strong> está previsto para el {{ due_at|date('full') }} "
                "a las {{ due_at|time }}.</p>\n"
                "{% if location is defined and location %}<p>Lugar: {{ location }}</p>"
                "{% endif %}\n" + button("Abrir")
            ),
            "sms": "Recordatorio: {{ what }} el {{ due_at|date('short') }} a las {{ due_at|time }}"
            "{% if location is defined and location %}, {{ location }}{% endif %}.",
            "title": "Recordatorio: {{ what }}",
            "body": "{{ due_at|date('medium') }} a las {{ due_at|time }}",
        },
        "de": {
            "subject": "Erinnerung: {{ what }} am {{ due_at|date('medium') }}",
            "content": (
                "<h1>Erinnerung</h1>\n<p>Hallo {{ name }},</p>\n"
                "<p><strong>{{ what }}</strong> ist am {{ due_at|date('full') }} um "
                "{{ due_at|time }} fällig.</p>\n"
                "{% if location is defined and location %}<p>Ort: {{ location }}</p>"
                "{% endif %}\n" + button("Öffnen")
            ),
            "sms": "Erinnerung: {{ what }} am {{ due_at|date('short') }} um {{ due_at|time }}"
            "{% if location is defined and location %}, {{ location }}{% endif %}.",
            "title": "Erinnerung: {{ what }}",
            "body": "{{ due_at|date('medium') }} um {{ due_at|time }}",
        },
    },
}

STATUS_UPDATE = {
    "base": "status-update",
    "name": "Status update",
    "category": "transactional",
    "description": "The status of something the user follows changed (an order, a ticket).",
    "variables": [
        NAME,
        var("item", example="Order #1042"),
        var("status", example="shipped"),
        var("updated_at", "datetime", "2026-03-01T16:45:00Z"),
        var("details", example="Expected delivery in 2 days.", required=False),
        ACTION,
    ],
    "channels": ("email", "sms", "push", "in_app"),
    "texts": {
        "en": {
            "subject": "{{ item }}: {{ status }}",
            "content": (
                "<h1>{{ item }}</h1>\n<p>Hello {{ name }},</p>\n"
                "<p>The status is now <strong>{{ status }}</strong> "
                "({{ updated_at|datetime('short') }}).</p>\n"
                "{% if details is defined and details %}<p>{{ details }}</p>{% endif %}\n"
                + button("Track it")
            ),
            "sms": "{{ item }}: {{ status }}."
            "{% if details is defined and details %} {{ details }}{% endif %}",
            "title": "{{ item }}: {{ status }}",
            "body": "{% if details is defined and details %}{{ details }}{% else %}"
            "Updated {{ updated_at|datetime('short') }}{% endif %}",
        },
        "fr": {
            "subject": "{{ item }} : {{ status }}",
            "content": (
                "<h1>{{ item }}</h1>\n<p>Bonjour {{ name }},</p>\n"
                "<p>Le statut est désormais <strong>{{ status }}</strong> "
                "({{ updated_at|datetime('short') }}).</p>\n"
                "{% if details is defined and details %}<p>{{ details }}</p>{% endif %}\n"
                + button("Suivre")
            ),
            "sms": "{{ item }} : {{ status }}."
            "{% if details is defined and details %} {{ details }}{% endif %}",
            "title": "{{ item }} : {{ status }}",
            "body": "{% if details is defined and details %}{{ details }}{% else %}"
            "Mis à jour le {{ updated_at|datetime('short') }}{% endif %}",
        },
        "es": {
            "subject": "{{ item }}: {{ status }}",
            "content": (
                "<h1>{{ item }}</h1>\n<p>Hola {{ name }}:</p>\n"
                "<p>El estado ahora es <strong>{{ status }}</strong> "
                "({{ updated_at|datetime('short') }}).</p>\n"
                "{% if details is defined and details %}<p>{{ details }}</p>{% endif %}\n"
                + button("Seguimiento")
            ),
            "sms": "{{ item }}: {{ status }}."
            "{% if details is defined and details %} {{ details }}{% endif %}",
            "title": "{{ item }}: {{ status }}",
            "body": "{% if details is defined and details %}{{ details }}{% else %}"
            "Actualizado el {{ updated_at|datetime('short') }}{% endif %}",
        },
        "de": {
            "subject": "{{ item }}: {{ status }}",
            "content": (
                "<h1>{{ item }}</h1>\n<p>Hallo {{ name }},</p>\n"
                "<p>Der Status ist jetzt <strong>{{ status }}</strong> "
                "({{ updated_at|datetime('short') }}).</p>\n"
                "{% if details is defined and details %}<p>{{ details }}</p>{% endif %}\n"
                + button("Verfolgen")
            ),
            "sms": "{{ item }}: {{ status }}."
            "{% if details is defined and details %} {{ details }}{% endif %}",
            "title": "{{ item }}: {{ status }}",
            "body": "{% if details is defined and details %}{{ details }}{% else %}"
            "Aktualisiert am {{ updated_at|datetime('short') }}{% endif %}",
        },
    },
}

_ITEMS_EXAMPLE = [
    {"name": "Notebook", "quantity": 2, "price": 4.5},
    {"name": "Fountain pen", "quantity": 1, "price": 32.0},
]


def _receipt_table(item: str, qty: str, amount: str, total: str) -> str:
    return (
        '<table class="items">\n<tr><th>'
        + item
        + "</th><th>"
        + qty
        + '</th><th class="amount">'
        + amount
        + "</th></tr>\n"
        "{% for line in items %}<tr><td>{{ line.name }}</td><td>{{ line.quantity }}</td>"
        '<td class="amount">{{ (line.price * line.quantity)|currency(currency) }}</td></tr>\n'
        "{% endfor %}"
        '<tr><td colspan="2"><strong>' + total + '</strong></td><td class="amount"><strong>'
        "{{ total|currency(currency) }}</strong></td></tr>\n</table>\n"
    )


RECEIPT = {
    "base": "receipt",
    "name": "Receipt",
    "category": "transactional",
    "description": "Proof of a payment, with its lines.",
    "variables": [
        NAME,
        var("order_number", example="1042"),
        var("items", "list", _ITEMS_EXAMPLE, description="[{name, quantity, price (a number)}]"),
        var("total", "number", "41.00"),
        var("currency", example="EUR", description="ISO 4217 code"),
        var("paid_at", "datetime", "2026-03-01T10:15:00Z"),
        ACTION,
    ],
    "channels": ("email", "sms", "in_app"),
    "texts": {
        "en": {
            "subject": "Your receipt for order {{ order_number }}",
            "content": (
                "<h1>Thank you, {{ name }}</h1>\n"
                "<p>We received your payment of {{ total|currency(currency) }} on "
                "{{ paid_at|date('long') }}.</p>\n"
                + _receipt_table("Item", "Qty", "Amount", "Total")
                + button("View order")
            ),
            "sms": "Payment received: {{ total|currency(currency) }} for order "
            "{{ order_number }}. Thank you!",
            "title": "Payment received",
            "body": "{{ total|currency(currency) }} for order {{ order_number }}",
        },
        "fr": {
            "subject": "Votre reçu pour la commande {{ order_number }}",
            "content": (
                "<h1>Merci, {{ name }}</h1>\n"
                "<p>Nous avons reçu votre paiement de {{ total|currency(currency) }} le "
                "{{ paid_at|date('long') }}.</p>\n"
                + _receipt_table("Article", "Qté", "Montant", "Total")
                + button("Voir la commande")
            ),
            # "reçu" would make the whole SMS UCS-2 (ç is not in GSM-7).
            "sms": "Paiement enregistré : {{ total|currency(currency) }} pour la commande "
            "{{ order_number }}. Merci !",
            "title": "Paiement reçu",
            "body": "{{ total|currency(currency) }} pour la commande {{ order_number }}",
        },
        "es": {
            "subject": "Su recibo del pedido {{ order_number }}",
            "content": (
                "<h1>Gracias, {{ name }}</h1>\n"
                "<p>Hemos recibido su pago de {{ total|currency(currency) }} el "
                "{{ paid_at|date('long') }}.</p>\n"
                + _receipt_table("Artículo", "Cant.", "Importe", "Total")
                + button("Ver pedido")
            ),
            "sms": "Pago recibido: {{ total|currency(currency) }} por el pedido "
            "{{ order_number }}. Gracias!",
            "title": "Pago recibido",
            "body": "{{ total|currency(currency) }} por el pedido {{ order_number }}",
        },
        "de": {
            "subject": "Ihre Quittung für Bestellung {{ order_number }}",
            "content": (
                "<h1>Vielen Dank, {{ name }}</h1>\n"
                "<p>Wir haben Ihre Zahlung über {{ total|currency(currency) }} am "
                "{{ paid_at|date('long') }} erhalten.</p>\n"
                + _receipt_table("Artikel", "Menge", "Betrag", "Summe")
                + button("Bestellung ansehen")
            ),
            "sms": "Zahlung erhalten: {{ total|currency(currency) }} für Bestellung "
            "{{ order_number }}. Vielen Dank!",
            "title": "Zahlung erhalten",
            "body": "{{ total|currency(currency) }} für Bestellung {{ order_number }}",
        },
    },
}

ANNOUNCEMENT = {
    "base": "announcement",
    "name": "Announcement",
    "category": "marketing",
    "description": "News about the product: a feature, an event, an offer.",
    "variables": [
        NAME,
        var("headline", example="Dark mode is here"),
        var("message", example="Switch it on in your settings."),
        var("action_label", example="Try it", required=False),
        ACTION,
    ],
    "channels": ("email", "push", "in_app"),
    "texts": {
        "en": {
            "subject": "{{ headline }}",
            "content": (
                "<h1>{{ headline }}</h1>\n<p>Hello {{ name }},</p>\n<p>{{ message }}</p>\n"
                '{% if action_url is defined and action_url %}<p><a class="button" '
                'href="{{ action_url }}">{{ action_label|default("Learn more") }}</a></p>'
                "{% endif %}"
            ),
            "title": "{{ headline }}",
            "body": "{{ message }}",
        },
        "fr": {
            "subject": "{{ headline }}",
            "content": (
                "<h1>{{ headline }}</h1>\n<p>Bonjour {{ name }},</p>\n<p>{{ message }}</p>\n"
                '{% if action_url is defined and action_url %}<p><a class="button" '
                'href="{{ action_url }}">{{ action_label|default("En savoir plus") }}</a></p>'
                "{% endif %}"
            ),
            "title": "{{ headline }}",
            "body": "{{ message }}",
        },
        "es": {
            "subject": "{{ headline }}",
            "content": (
                "<h1>{{ headline }}</h1>\n<p>Hola {{ name }}:</p>\n<p>{{ message }}</p>\n"
                '{% if action_url is defined and action_url %}<p><a class="button" '
                'href="{{ action_url }}">{{ action_label|default("Más información") }}</a></p>'
                "{% endif %}"
            ),
            "title": "{{ headline }}",
            "body": "{{ message }}",
        },
        "de": {
            "subject": "{{ headline }}",
            "content": (
                "<h1>{{ headline }}</h1>\n<p>Hallo {{ name }},</p>\n<p>{{ message }}</p>\n"
                '{% if action_url is defined and action_url %}<p><a class="button" '
                'href="{{ action_url }}">{{ action_label|default("Mehr erfahren") }}</a></p>'
                "{% endif %}"
            ),
            "title": "{{ headline }}",
            "body": "{{ message }}",
        },
    },
}

WELCOME = {
    "base": "welcome",
    "name": "Welcome",
    "category": "transactional",
    "description": "Sent once, when an account is created.",
    "variables": [NAME, var("product", example="Acme"), ACTION],
    "channels": ("email", "push", "in_app"),
    "texts": {
        "en": {
            "subject": "Welcome to {{ product }}, {{ name }}!",
            "content": (
                "<h1>Welcome, {{ name }}!</h1>\n"
                "<p>Your {{ product }} account is ready. Here is where to start.</p>\n"
                + button("Get started")
            ),
            "title": "Welcome to {{ product }}",
            "body": "Your account is ready, {{ name }}.",
        },
        "fr": {
            "subject": "Bienvenue sur {{ product }}, {{ name }} !",
            "content": (
                "<h1>Bienvenue, {{ name }} !</h1>\n"
                "<p>Votre compte {{ product }} est prêt. Voici par où commencer.</p>\n"
                + button("Commencer")
            ),
            "title": "Bienvenue sur {{ product }}",
            "body": "Votre compte est prêt, {{ name }}.",
        },
        "es": {
            "subject": "¡Bienvenido a {{ product }}, {{ name }}!",
            "content": (
                "<h1>¡Bienvenido, {{ name }}!</h1>\n"
                "<p>Su cuenta de {{ product }} está lista. Empiece por aquí.</p>\n"
                + button("Empezar")
            ),
            "title": "Bienvenido a {{ product }}",
            "body": "Su cuenta está lista, {{ name }}.",
        },
        "de": {
            "subject": "Willkommen bei {{ product }}, {{ name }}!",
            "content": (
                "<h1>Willkommen, {{ name }}!</h1>\n"
                "<p>Ihr {{ product }}-Konto ist bereit. Hier geht es los.</p>\n"
                + button("Loslegen")
            ),
            "title": "Willkommen bei {{ product }}",
            "body": "Ihr Konto ist bereit, {{ name }}.",
        },
    },
}

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

TEMPLATES: list[dict[str, Any]] = [
    SYSTEM_ALERT,
    REMINDER,
    STATUS_UPDATE,
    RECEIPT,
    ANNOUNCEMENT,
    WELCOME,
    DIGEST,
]

CHANNEL_NAMES = {"email": "email", "sms": "SMS", "push": "push", "in_app": "in-app"}


def template_key(base: str, channel: str) -> str:
    return f"{base}-{channel.replace('_', '-')}"


def version_fields(channel: str, texts: dict, language: str) -> dict:
    """The version fields of one language of one seeded template on ``channel``."""
    if channel == "email":
        return {"subject": texts["subject"], "html": layout(language, texts["content"])}
    if channel == "sms":
        return {"text": texts["sms"]}
    if channel == "push":
        return {
            "title": texts["title"],
            "body": texts["body"],
            "deep_link": "{% if action_url is defined %}{{ action_url }}{% endif %}",
        }
    return {
        "title": texts["title"],
        "body": texts["body"],
        "action_url": "{% if action_url is defined %}{{ action_url }}{% endif %}",
    }


def seed(apps=None) -> int:
    """Creates the seeded templates that do not exist yet; returns how many were created."""
    if apps is None:
        apps = live_apps
    Category = apps.get_model("communication", "Category")
    Template = apps.get_model("templates_app", "Template")
    TemplateVersion = apps.get_model("templates_app", "TemplateVersion")

    now = timezone.now()
    created = 0
    categories = {c.key: c for c in Category.objects.all()}
    for spec in TEMPLATES:
        for channel in spec["channels"]:
            key = template_key(spec["base"], channel)
            if Template.objects.filter(key=key).exists():
                continue
            template = Template.objects.create(
                key=key,
                name=f"{spec['name']} ({CHANNEL_NAMES[channel]})",
                description=spec["description"],
                category=categories[spec["category"]],
                channel=channel,
                default_language="en",
                variables=spec["variables"],
                active=True,
                created_by=SEED_ACTOR,
            )
            for number, language in enumerate(LANGUAGES, start=1):
                seeded_version(
                    TemplateVersion,
                    template,
                    language,
                    number,
                    version_fields(channel, spec["texts"][language], language),
                    note="Seeded",
                    now=now,
                )
            created += 1
    return created


def seeded_version(
    version_model: Any, template: Any, language: str, number: int, fields: dict, *, note: str, now
) -> Any:
    """A live, approved version of ``template`` written by the seed (here and in data
    migrations, which pass their historical model)."""
    return version_model.objects.create(
        template=template,
        language=language,
        number=number,
        status="approved",
        is_live=True,
        live_since=now,
        note=note,
        created_by=SEED_ACTOR,
        submitted_by=SEED_ACTOR,
        submitted_at=now,
        approved_by=SEED_ACTOR,
        approved_at=now,
        **fields,
    )
