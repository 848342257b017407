"""Devices' tokens, endpoints and subscription keys, and suppressed addresses, encrypted at rest
(``communication.fields``). A device is found by the keyed hash of its token or endpoint, where
its unique constraints move; a suppression keeps its ``address_hash`` (the same keyed hash), and
an erased one's blank address becomes NULL."""

from django.db import migrations, models
from django.db.models import Q

import communication.fields
from communication.migration_ops import encrypt_columns, fill_lookup_hashes


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0009_encrypt_notifications"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="device", name="device_token_unique"),
        migrations.RemoveConstraint(model_name="device", name="device_endpoint_unique"),
        migrations.RemoveConstraint(model_name="device", name="device_address_matches_platform"),
        migrations.AddField(
            model_name="device",
            name="token_hash",
            field=communication.fields.LookupHashField(casefold=False, of="token"),
        ),
        migrations.AddField(
            model_name="device",
            name="endpoint_hash",
            field=communication.fields.LookupHashField(casefold=False, of="endpoint"),
        ),
        encrypt_columns(
            "notifications",
            "device",
            {
                "token": communication.fields.EncryptedTextField(
                    blank=True, help_text="FCM registration token"
                ),
                "endpoint": communication.fields.EncryptedTextField(
                    blank=True, help_text="Web Push endpoint"
                ),
                "p256dh": communication.fields.EncryptedTextField(blank=True),
                "auth": communication.fields.EncryptedTextField(blank=True),
            },
            old_types={
                "token": "varchar(1024)",
                "endpoint": "varchar(2000)",
                "p256dh": "varchar(255)",
                "auth": "varchar(64)",
            },
        ),
        fill_lookup_hashes(
            "notifications", "device", {"token_hash": "token", "endpoint_hash": "endpoint"}
        ),
        migrations.AddConstraint(
            model_name="device",
            constraint=models.UniqueConstraint(
                condition=~Q(token_hash=""), fields=("token_hash",), name="device_token_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="device",
            constraint=models.UniqueConstraint(
                condition=~Q(endpoint_hash=""),
                fields=("endpoint_hash",),
                name="device_endpoint_unique",
            ),
        ),
        migrations.AddConstraint(
            model_name="device",
            constraint=models.CheckConstraint(
                condition=(Q(platform="web", token_hash="") & ~Q(endpoint_hash=""))
                | (Q(platform__in=["ios", "android"], endpoint_hash="") & ~Q(token_hash="")),
                name="device_address_matches_platform",
            ),
        ),
        # An erased address becomes NULL (an encrypted blank cannot be told from an address).
        migrations.AlterField(
            model_name="suppression",
            name="address",
            field=models.CharField(blank=True, max_length=320, null=True),
        ),
        migrations.RunSQL(
            "UPDATE notifications_suppression SET address = NULL WHERE address = ''",
            "UPDATE notifications_suppression SET address = '' WHERE address IS NULL",
        ),
        encrypt_columns(
            "notifications",
            "suppression",
            {
                "address": communication.fields.EncryptedTextField(
                    blank=True,
                    help_text="email (lower-cased) or E.164 number; NULL once erased",
                    null=True,
                ),
            },
            old_types={"address": "varchar(320)"},
        ),
    ]
