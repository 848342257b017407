# Provider calls (events with a latency) for the console's provider health, read from the index
# alone. Built concurrently: the event table keeps taking writes meanwhile.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("analytics", "0001_initial"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(
                condition=models.Q(latency_ms__isnull=False),
                fields=["occurred_at"],
                include=["channel", "provider", "type", "latency_ms"],
                name="event_provider_calls",
            ),
        ),
    ]
