"""The rollups' count of possibly-duplicate sends.

A column with a constant default: PostgreSQL adds it without rewriting the table. Buckets rolled
up before it read 0, which is what they held (no send was flagged before the flag existed); a
``manage.py analytics_rollup --rebuild`` recounts any range from its events.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0004_event_user_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="rollup",
            name="possibly_duplicate",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
    ]
