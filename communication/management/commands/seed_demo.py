"""``manage.py seed_demo``: demo users and data for them, so the console and ``/app/`` show
something right after ``make run``. Safe to run again: a second run adds nothing.

Each app adds its own data from its ``demo.py`` (``seed(users, out)``), in ``PROJECT_APPS``
order; the core names none of them, as in ``urls.py``.
"""

from importlib import import_module
from importlib.util import find_spec

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from communication import demo


class Command(BaseCommand):
    help = "Create demo users, conversations, notifications and sends (development only)."

    def handle(self, *args, **opts):
        if not demo.available():
            raise CommandError(
                "seed_demo only works in development without an identity service: demo users "
                "sign in with development tokens."
            )
        users = demo.users_seed()
        self.stdout.write(f"users: {', '.join(f'{u.external_id} ({u.name})' for u in users)}")
        for app in settings.PROJECT_APPS:
            if app == "communication" or find_spec(f"{app}.demo") is None:
                continue
            import_module(f"{app}.demo").seed(users, self.stdout)
        self.stdout.write(
            "Sign in at /app/ by picking a demo user (GET /app/demo-users lists their tokens), "
            "or: python manage.py issue_token --user demo-ada"
        )
