"""Indexes for campaign conditions on a user's history (segments' ``event.<type>`` rules and
sequence steps' conditions).

Created on the partitioned parent: PostgreSQL builds them on every partition, and on each
partition attached later (``analytics.partitions``). The build blocks writes of events while it
runs: on a large table, run it in a quiet hour.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0003_partitioned_events"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="event",
            index=models.Index(
                condition=models.Q(("user_id__isnull", False)),
                fields=["user_id", "type", "occurred_at"],
                include=("campaign_id", "step_id"),
                name="event_user_type_time",
            ),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(
                condition=models.Q(("step_id__isnull", False)),
                fields=["step_id", "type", "user_id"],
                name="event_step_type_user",
            ),
        ),
    ]
