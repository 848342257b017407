"""``manage.py rotate_keys``: re-encrypts the values an older key of ``FIELD_ENCRYPTION_KEYS``
wrote with the newest one, in batches, while the service runs; run it again to resume.
``--check`` only counts them (exit 1 while any is left)."""

from django.core.management.base import BaseCommand, CommandError

from communication.audit import audit_actor
from communication.keyrotation import BATCH, rotate, stale_counts


class Command(BaseCommand):
    help = "Re-encrypt every encrypted field with the newest key of FIELD_ENCRYPTION_KEYS."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=BATCH)
        parser.add_argument(
            "--check",
            action="store_true",
            help="Count the rows still on an older key; exit 1 when there are any.",
        )

    def handle(self, *args, batch_size: int, check: bool, **opts):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if check:
            left = stale_counts()
            for table, count in sorted(left.items()):
                self.stdout.write(f"{table}: {count} rows on an older key")
            if left:
                raise CommandError(f"{sum(left.values())} rows still on an older key", returncode=1)
            self.stdout.write("Every encrypted value is under the newest key.")
            return
        with audit_actor("command:rotate_keys"):
            result = rotate(
                batch=batch_size,
                progress=lambda table, n: self.stdout.write(f"{table}: {n} rows re-encrypted"),
            )
        for table, count in sorted(result.left.items()):
            self.stderr.write(f"{table}: {count} rows still on an older key (locked); run again")
        self.stdout.write(f"{result.total} rows re-encrypted with the key {result.key_id!r}.")
        if result.left:
            raise CommandError("some rows are still on an older key", returncode=1)
