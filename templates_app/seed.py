"""Generic templates every deployment starts with, in English, French, Spanish and German.

``seed(apps)`` runs from a data migration with historical models and from
``manage.py seed_templates``; it only adds templates whose key does not exist yet, so an
operator's edits are never overwritten. Seeded versions are approved by ``system:seed``.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps as live_apps
from django.utils import timezone

from templates_app.seed_digest import DIGEST
from templates_app.seed_parts import ACTION, NAME, button, var

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

# The digest family is long enough for a module of its own; it builds on the helpers above.


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
