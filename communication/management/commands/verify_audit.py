"""``manage.py verify_audit``: recomputes the audit chain; exits 0 when it holds, 1 with the id of
the first broken entry."""

from django.core.management.base import BaseCommand, CommandError

from communication.audit import audit_verify


class Command(BaseCommand):
    help = "Recompute the audit chain; exit 1 with the id of the first broken entry."

    def handle(self, *args, **opts):
        result = audit_verify()
        if not result.ok:
            # CommandError prints to stderr and exits with its returncode.
            raise CommandError(result.summary(), returncode=1)
        self.stdout.write(result.summary())
