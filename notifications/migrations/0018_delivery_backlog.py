# The send API's admission control counts queued deliveries per priority class from this index
# alone. Built concurrently: the table is the service's largest and keeps taking writes meanwhile
# (a plain CREATE INDEX when a test migrates inside its transaction).

from django.db import migrations, models

from communication.migration_ops import AddIndexConcurrentlyOutsideTransactions


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("notifications", "0017_delivery_crash_tracking"),
    ]

    operations = [
        AddIndexConcurrentlyOutsideTransactions(
            model_name="delivery",
            index=models.Index(
                fields=["priority"],
                name="delivery_backlog",
                condition=models.Q(status="queued", priority__isnull=False),
            ),
        ),
    ]
