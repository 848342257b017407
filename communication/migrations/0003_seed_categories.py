"""The categories every app shares. Existing rows are left as an operator may have edited them."""

from django.db import migrations

ALL = ["email", "sms", "push", "web_push", "in_app"]

CATEGORIES = [
    # key, name, description, default channels, mandatory, requires_consent, tracking_allowed
    ("system", "System", "Service notices: maintenance, outages, changes to the product.",
     ["email", "in_app"], False, False, False),
    ("security", "Security", "Sign-ins, password and key changes, suspicious activity.",
     ["email", "sms", "push", "in_app"], True, False, False),
    ("transactional", "Transactional", "Receipts, orders, bookings and their status.",
     ["email", "push", "in_app"], True, False, False),
    ("alerts", "Alerts", "Thresholds crossed and events the user asked to be told about.",
     ALL, False, False, False),
    ("reminders", "Reminders", "Appointments, due dates and things left to do.",
     ["email", "push", "in_app"], False, False, True),
    ("activity", "Activity", "What others did: comments, mentions, shares.",
     ["push", "web_push", "in_app"], False, False, True),
    ("messages", "Messages", "New messages in conversations.",
     ["push", "web_push", "in_app"], False, False, False),
    ("marketing", "Marketing", "Announcements, offers and newsletters; sent only with consent.",
     ["email"], False, True, True),
]


def seed(apps, schema_editor):
    Category = apps.get_model("communication", "Category")
    for position, (key, name, description, channels, mandatory, consent, tracking) in enumerate(
        CATEGORIES
    ):
        Category.objects.get_or_create(
            key=key,
            defaults={
                "name": name,
                "description": description,
                "default_channels": channels,
                "mandatory": mandatory,
                "requires_consent": consent,
                "tracking_allowed": tracking,
                "position": position,
            },
        )


def unseed(apps, schema_editor):
    Category = apps.get_model("communication", "Category")
    Category.objects.filter(key__in=[c[0] for c in CATEGORIES]).delete()


class Migration(migrations.Migration):
    dependencies = [("communication", "0002_category")]

    operations = [migrations.RunPython(seed, unseed)]
