"""Suppressions are found by a keyed hash of the address (``SUPPRESSION_HASH_KEY``), so that an
erasure can blank the address and keep it suppressed. Existing rows get their hash here."""

from django.db import migrations, models


def backfill(apps, schema_editor):
    from communication.compliance.keyed import keyed_hash  # noqa: PLC0415

    Suppression = apps.get_model("notifications", "Suppression")
    batch = []
    for row in Suppression.objects.only("id", "address").iterator(chunk_size=2000):
        row.address_hash = keyed_hash(row.address)
        batch.append(row)
        if len(batch) >= 2000:
            Suppression.objects.bulk_update(batch, ["address_hash"])
            batch = []
    if batch:
        Suppression.objects.bulk_update(batch, ["address_hash"])


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0007_bulk_and_campaign_ids"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="suppression", name="suppression_unique"),
        migrations.AddField(
            model_name="suppression",
            name="address_hash",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="suppression",
            name="address",
            field=models.CharField(
                blank=True, help_text="email (lower-cased) or E.164 number", max_length=320
            ),
        ),
        migrations.AlterField(
            model_name="suppression",
            name="reason",
            field=models.CharField(
                choices=[
                    ("hard_bounce", "Hard Bounce"),
                    ("complaint", "Complaint"),
                    ("unsubscribe", "Unsubscribe"),
                    ("manual", "Manual"),
                    ("invalid", "Invalid"),
                    ("erased", "Erased"),
                ],
                max_length=16,
            ),
        ),
        migrations.AddConstraint(
            model_name="suppression",
            constraint=models.UniqueConstraint(
                fields=("channel", "address_hash"), name="suppression_unique"
            ),
        ),
    ]
