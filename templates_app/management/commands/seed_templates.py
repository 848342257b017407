from django.core.management.base import BaseCommand

from templates_app.seed import seed


class Command(BaseCommand):
    help = "Adds the generic templates (system alert, reminder, …) whose keys do not exist yet."

    def handle(self, *args, **options):
        created = seed()
        self.stdout.write(f"{created} template(s) created.")
