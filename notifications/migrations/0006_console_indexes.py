# The staff console's dashboard reads deliveries by creation time (sends per day, channel and
# status) from this index alone. Built concurrently: the table is the service's largest and
# keeps taking writes meanwhile.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("notifications", "0005_resent_from"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(
                fields=["created_at"], include=["channel", "status"], name="delivery_created"
            ),
        ),
    ]
