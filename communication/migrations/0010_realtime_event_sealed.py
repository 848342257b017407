"""A realtime event's payload moves into ``sealed``, encrypted (``communication.fields``): the
event log used for replay quotes messages and notifications. ``data`` keeps only what the
statement writing an event adds in SQL (a message's ids)."""

import django.core.serializers.json
from django.db import migrations

import communication.fields
from communication.fields import encrypt
from communication.migration_ops import settle_constraints

BATCH = 2000


def seal_existing(apps, schema_editor):
    connection = schema_editor.connection
    last = 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT id, data::text FROM communication_realtimeevent "
                "WHERE id > %s ORDER BY id LIMIT %s",
                [last, BATCH],
            )
            rows = cursor.fetchall()
            if not rows:
                settle_constraints(connection)
                return
            cursor.executemany(
                "UPDATE communication_realtimeevent SET sealed = %s, data = '{}' WHERE id = %s",
                [(encrypt(text.encode()), pk) for pk, text in rows],
            )
            last = rows[-1][0]


class Migration(migrations.Migration):
    dependencies = [("communication", "0009_audit_chain")]

    operations = [
        migrations.AddField(
            model_name="realtimeevent",
            name="sealed",
            field=communication.fields.EncryptedJSONField(
                encoder=django.core.serializers.json.DjangoJSONEncoder, null=True
            ),
        ),
        migrations.RunPython(seal_existing, migrations.RunPython.noop, elidable=False),
    ]
