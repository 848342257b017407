"""Seeds the generic templates (see templates_app.seed); existing keys are left alone."""

from django.db import migrations


def seed(apps, schema_editor):
    from templates_app.seed import seed as run

    run(apps)


def unseed(apps, schema_editor):
    from templates_app.seed import SEED_ACTOR

    apps.get_model("templates_app", "Template").objects.filter(created_by=SEED_ACTOR).delete()


class Migration(migrations.Migration):
    dependencies = [("templates_app", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
