# The staff console reads provider calls (events with a latency), each provider's last error and
# the failures (with their reason in ``data``) on these indexes. Built concurrently: the event
# table keeps taking writes meanwhile.

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
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(
                condition=models.Q(
                    type__in=["retry", "failed", "ambiguous"], latency_ms__isnull=False
                ),
                fields=["channel", "provider", "occurred_at"],
                name="event_provider_errors",
            ),
        ),
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(
                condition=models.Q(type="failed"),
                fields=["occurred_at"],
                include=["channel", "data"],
                name="event_failures",
            ),
        ),
    ]
