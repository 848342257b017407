"""A delivery's error is encrypted at rest: a provider's answer may quote the address."""

from django.db import migrations

import communication.fields
from communication.migration_ops import encrypt_columns


class Migration(migrations.Migration):
    dependencies = [("notifications", "0010_encrypt_devices_suppressions")]

    operations = [
        encrypt_columns(
            "notifications",
            "delivery",
            {"error": communication.fields.EncryptedTextField(blank=True)},
            {"error": "text"},
        )
    ]
