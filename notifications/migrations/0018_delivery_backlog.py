# The send API's admission control counts queued deliveries per priority class from this index
# alone. Built concurrently: the table is the service's largest and keeps taking writes meanwhile.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("notifications", "0017_delivery_crash_tracking"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(
                fields=["priority"],
                name="delivery_backlog",
                condition=models.Q(status="queued", priority__isnull=False),
            ),
        ),
    ]
