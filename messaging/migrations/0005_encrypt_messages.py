"""Messages, their rendering, their metadata and their edit trail are encrypted at rest
(``communication.fields``): the columns become ``bytea`` and every existing row is encrypted."""

from django.core.serializers.json import DjangoJSONEncoder
from django.db import migrations

from communication.fields import EncryptedJSONField, EncryptedTextField
from communication.migration_ops import encrypt_columns


class Migration(migrations.Migration):
    dependencies = [("messaging", "0004_e2e_encryption")]

    operations = [
        encrypt_columns(
            "messaging",
            "message",
            {
                "content": EncryptedTextField(blank=True),
                "html": EncryptedTextField(blank=True),
                "metadata": EncryptedJSONField(
                    encoder=DjangoJSONEncoder, default=dict, blank=True
                ),
            },
            old_types={"content": "text", "html": "text", "metadata": "jsonb"},
        ),
        encrypt_columns(
            "messaging",
            "messageedit",
            {
                "previous_content": EncryptedTextField(blank=True),
                "previous_metadata": EncryptedJSONField(
                    encoder=DjangoJSONEncoder, default=dict, blank=True
                ),
            },
            old_types={"previous_content": "text", "previous_metadata": "jsonb"},
        ),
    ]
