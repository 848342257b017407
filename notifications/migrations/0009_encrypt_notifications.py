"""The send pipeline's rows encrypted at rest (communication.fields): what a notification said
and to whom, the request's content and variables, the delivery's address and device answers,
the development outbox, bulk recipients waiting for the fan-out and the stored idempotent
answers. Addresses get keyed-hash columns beside them for the look-ups that need equality (the
delivery log's exact-address search, the outbox's ``?to=``, the compliance registry)."""

import django.core.serializers.json
from django.db import migrations, models

import communication.fields
from communication.migration_ops import encrypt_columns, fill_lookup_hashes


def text(**kwargs):
    return communication.fields.EncryptedTextField(**kwargs)


def document(**kwargs):
    return communication.fields.EncryptedJSONField(
        encoder=django.core.serializers.json.DjangoJSONEncoder, **kwargs
    )


def lookup_hash(of):
    return communication.fields.LookupHashField(of=of)


SPEC_HELP = "as the caller named it: user_id, email or phone"


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0008_suppression_address_hash"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="delivery", name="delivery_address"),
        migrations.AddField("notification", "email_hash", lookup_hash("email")),
        migrations.AddField("notification", "phone_hash", lookup_hash("phone")),
        migrations.AddField("bulkrecipient", "email_hash", lookup_hash("email")),
        migrations.AddField("bulkrecipient", "phone_hash", lookup_hash("phone")),
        migrations.AddField("delivery", "address_hash", lookup_hash("address")),
        migrations.AddField("outboxmessage", "to_hash", lookup_hash("to")),
        encrypt_columns(
            "notifications",
            "idempotencykey",
            {"response": document(null=True)},
            old_types={"response": "jsonb"},
        ),
        encrypt_columns(
            "notifications",
            "notificationrequest",
            {
                "content": document(default=dict, blank=True),
                "data": document(default=dict, blank=True),
            },
            old_types={"content": "jsonb", "data": "jsonb"},
        ),
        encrypt_columns(
            "notifications",
            "bulkrecipient",
            {
                "spec": document(help_text=SPEC_HELP),
                "email": text(blank=True),
                "phone": text(blank=True),
                "data": document(default=dict, blank=True),
            },
            old_types={
                "spec": "jsonb",
                "email": "varchar(320)",
                "phone": "varchar(20)",
                "data": "jsonb",
            },
        ),
        encrypt_columns(
            "notifications",
            "notification",
            {
                "recipient": document(help_text=SPEC_HELP),
                "email": text(blank=True),
                "phone": text(blank=True),
                "title": text(blank=True),
                "body": text(blank=True),
                "data": document(default=dict, blank=True),
            },
            old_types={
                "recipient": "jsonb",
                "email": "varchar(320)",
                "phone": "varchar(20)",
                "title": "varchar(500)",
                "body": "text",
                "data": "jsonb",
            },
        ),
        encrypt_columns(
            "notifications",
            "delivery",
            {"address": text(blank=True), "device_results": document(default=dict, blank=True)},
            old_types={"address": "varchar(320)", "device_results": "jsonb"},
        ),
        encrypt_columns(
            "notifications",
            "outboxmessage",
            {
                "to": text(),
                "subject": text(blank=True),
                "text": text(blank=True),
                "html": text(blank=True),
                "payload": document(default=dict, blank=True),
            },
            old_types={
                "to": "varchar(320)",
                "subject": "varchar(998)",
                "text": "text",
                "html": "text",
                "payload": "jsonb",
            },
        ),
        fill_lookup_hashes(
            "notifications", "notification", {"email_hash": "email", "phone_hash": "phone"}
        ),
        fill_lookup_hashes(
            "notifications", "bulkrecipient", {"email_hash": "email", "phone_hash": "phone"}
        ),
        fill_lookup_hashes("notifications", "delivery", {"address_hash": "address"}),
        fill_lookup_hashes("notifications", "outboxmessage", {"to_hash": "to"}),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(
                condition=~models.Q(address_hash=""),
                fields=["address_hash"],
                name="delivery_address",
            ),
        ),
        migrations.AddIndex(
            model_name="outboxmessage",
            index=models.Index(fields=["to_hash"], name="outbox_to"),
        ),
    ]
