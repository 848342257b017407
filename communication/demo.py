"""Demo users for development (``manage.py seed_demo``, ``GET /app/demo-users``).

Demo users are marked by their external id's ``demo-`` prefix: the endpoint lists only them,
never a real user's token. Each app that has demo data adds it in its own ``demo.py``
(``seed(users, out)``), which ``seed_demo`` calls in ``PROJECT_APPS`` order.
"""

from __future__ import annotations

from django.conf import settings

from communication import identity, services
from communication.audit import audit_actor
from communication.auth import keys, tokens
from communication.models import User

PREFIX = "demo-"
ORGANIZATION = "Demo"  # the demo campaign's segment selects them by it

# external id, name, email, phone, locale, time zone
USERS = [
    ("demo-ada", "Ada Lovelace", "ada@demo.example", "+33612345601", "en-GB", "Europe/London"),
    (
        "demo-grace",
        "Grace Hopper",
        "grace@demo.example",
        "+33612345602",
        "en-US",
        "America/New_York",
    ),
    ("demo-alan", "Alan Turing", "alan@demo.example", "+33612345603", "en-GB", "Europe/London"),
    ("demo-marie", "Marie Curie", "marie@demo.example", "+33612345604", "fr-FR", "Europe/Paris"),
    ("demo-hedy", "Hedy Lamarr", "hedy@demo.example", "+33612345605", "de-AT", "Europe/Vienna"),
]


def available() -> bool:
    """Development tokens are accepted: not production, and no identity service configured
    (its tokens replace ours, and its profiles would override the demo users')."""
    return settings.DEVELOPMENT and keys.dev_mode() and not identity.configured()


def users_seed() -> list[User]:
    """Creates (or refreshes) the demo users; safe to run again."""
    with audit_actor("command:seed_demo"):
        return [
            services.user_update_local(
                external_id=external_id,
                name=name,
                email=email,
                phone=phone,
                locale=locale,
                timezone=tz,
                organization=ORGANIZATION,
            )
            for external_id, name, email, phone, locale, tz in USERS
        ]


def users_list() -> list[User]:
    return list(User.objects.filter(external_id__startswith=PREFIX).order_by("external_id"))


def users_tokens(*, ttl: int = 12 * 3600) -> list[dict[str, str]]:
    """``[{"user_id", "name", "token"}]`` for each demo user, as ``issue_token --user`` makes
    them."""
    return [
        {
            "user_id": user.external_id or "",
            "name": user.name,
            "token": tokens.issue_user_token(user, ttl=ttl),
        }
        for user in users_list()
    ]
