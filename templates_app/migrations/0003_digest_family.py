"""The ``digest`` family renders a digest of held notifications (grouped by category, with how
many were left out) on email, SMS, push and in-app. Missing channels are created; a seeded
version an operator has not touched is replaced by the new text, an edited one is left alone."""

from django.db import migrations
from django.db.models import Max
from django.utils import timezone


def forward(apps, schema_editor):
    from templates_app.seed import (
        DIGEST,
        LANGUAGES,
        SEED_ACTOR,
        seeded_version,
        template_key,
        version_fields,
    )
    from templates_app.seed import seed as run

    Template = apps.get_model("templates_app", "Template")
    TemplateVersion = apps.get_model("templates_app", "TemplateVersion")
    now = timezone.now()
    for channel in ("email", "in_app"):
        template = Template.objects.filter(key=template_key("digest", channel)).first()
        if template is None or template.created_by != SEED_ACTOR:
            continue
        versions = TemplateVersion.objects.filter(template=template)
        if versions.exclude(created_by=SEED_ACTOR).exists():
            continue  # an operator's edit wins
        template.variables = DIGEST["variables"]
        template.save(update_fields=["variables"])
        number = versions.aggregate(n=Max("number"))["n"] or 0
        for language in LANGUAGES:
            fields = version_fields(channel, DIGEST["texts"][language], language)
            live = versions.filter(language=language, is_live=True, variant__isnull=True).first()
            if live is not None and all(getattr(live, k) == v for k, v in fields.items()):
                continue
            versions.filter(language=language, is_live=True, variant__isnull=True).update(
                is_live=False
            )
            number += 1
            seeded_version(
                TemplateVersion,
                template,
                language,
                number,
                fields,
                note="Seeded: digest of held notifications",
                now=now,
            )
    run(apps)  # the SMS and push versions, which did not exist


class Migration(migrations.Migration):
    dependencies = [("templates_app", "0002_seed_templates")]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
