"""Static list members' and campaign recipients' addresses and data encrypted at rest
(``communication.fields``). The key of an address-only row becomes the keyed hash of its address
(``campaigns.services.lists.address_key``), so that it dedups without holding the address."""

from django.core.serializers.json import DjangoJSONEncoder
from django.db import migrations, models
from django.db.models import Q

import communication.fields
from communication.migration_ops import BATCH, encrypt_columns, settle_constraints


def _rekey(apps, schema_editor, key_of) -> None:
    """Sets the key of every address-only row (an erased one keeps its marker)."""
    for name in ("StaticListMember", "CampaignRecipient"):
        model = apps.get_model("campaigns", name)
        rows = model._base_manager.filter(user__isnull=True).exclude(key__startswith="erased:")
        last = 0
        while True:
            batch = list(rows.filter(pk__gt=last).order_by("pk")[:BATCH])
            if not batch:
                break
            for row in batch:
                row.key = key_of(row)
            model._base_manager.bulk_update(batch, ["key"])
            last = batch[-1].pk
    settle_constraints(schema_editor.connection)


def hash_address_keys(apps, schema_editor):
    from communication.compliance.keyed import lookup_hash  # noqa: PLC0415

    _rekey(apps, schema_editor, lambda row: lookup_hash(row.key))


def address_keys(apps, schema_editor):
    _rekey(apps, schema_editor, lambda row: row.email or row.phone or row.key)


def encrypted_fields():
    return {
        "email": communication.fields.EncryptedTextField(blank=True),
        "phone": communication.fields.EncryptedTextField(blank=True),
        "data": communication.fields.EncryptedJSONField(
            blank=True, default=dict, encoder=DjangoJSONEncoder
        ),
    }


OLD_TYPES = {"email": "varchar(320)", "phone": "varchar(20)", "data": "jsonb"}


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0002_campaigns"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="staticlistmember", name="static_member_has_address"
        ),
        encrypt_columns("campaigns", "staticlistmember", encrypted_fields(), OLD_TYPES),
        encrypt_columns("campaigns", "campaignrecipient", encrypted_fields(), OLD_TYPES),
        # Back, the key is the (decrypted) address again.
        migrations.RunPython(hash_address_keys, address_keys, elidable=False),
        migrations.AddConstraint(
            model_name="staticlistmember",
            constraint=models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(key=""), name="static_member_has_address"
            ),
        ),
    ]
