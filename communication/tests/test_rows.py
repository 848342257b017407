"""``rows``: several tables in one statement, each value as the ORM would store and read it."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import pytest
from django.contrib.postgres.fields import ArrayField
from django.db import IntegrityError, connection, models, transaction
from django.test.utils import CaptureQueriesContext, isolate_apps

from analytics.models import Event
from communication import rows
from communication.fields import EncryptedJSONField, EncryptedTextField
from communication.models import Category
from notifications.models import Delivery, Notification, NotificationRequest

pytestmark = pytest.mark.django_db


def test_rows_of_four_tables_in_one_statement_read_back_as_written():
    Category.objects.get_or_create(key="alerts", defaults={"name": "Alerts"})
    at = dt.datetime(2026, 11, 29, 3, 4, 5, 123456, tzinfo=dt.UTC)
    request = NotificationRequest(
        caller="svc", category_id="alerts", content={"subject": "Hé", "n": [1, 2.5, None]}
    )
    notifications = [
        Notification(request=request, category_id="alerts", recipient={"email": f"{i}@x.org"})
        for i in range(3)
    ]
    deliveries = [
        Delivery(notification=n, channel="email", address=f"{i}@x.org", status="queued")
        for i, n in enumerate(notifications)
    ]
    deliveries[0].scheduled_for = at
    deliveries[1].template_version = uuid.UUID(int=7)
    events = [Event(type="queued", delivery_id=d.id, latency_ms=1.5) for d in deliveries]

    with CaptureQueriesContext(connection) as queries:
        rows.insert_all([[request], notifications, [], deliveries, events])

    assert len(queries) == 1
    stored = NotificationRequest.objects.get(id=request.id)
    assert stored.content == {"subject": "Hé", "n": [1, 2.5, None]}
    assert stored.created_at == request.created_at  # auto_now_add, to the microsecond
    assert stored.channels == [] and stored.scheduled_at is None
    assert Notification.objects.filter(request=request).count() == 3
    first, second, _ = (Delivery.objects.get(id=d.id) for d in deliveries)
    assert first.scheduled_for == at
    assert second.template_version == uuid.UUID(int=7)
    assert first.attempts == 0 and first.error == "" and first.lease_until is None
    written = Event.objects.filter(delivery_id__in=[d.id for d in deliveries])
    assert written.count() == 3
    assert all(e.occurred_at is not None and e.latency_ms == 1.5 for e in written)  # db_default


def test_a_broken_row_writes_nothing():
    Category.objects.get_or_create(key="alerts", defaults={"name": "Alerts"})
    request = NotificationRequest(caller="svc", category_id="alerts")
    twice = Notification(request=request, category_id="alerts", recipient={})
    with pytest.raises(IntegrityError), transaction.atomic():
        rows.insert_all([[request], [twice, twice]])  # the same primary key twice
    assert not NotificationRequest.objects.filter(id=request.id).exists()


class TaggedEncoder(json.JSONEncoder):
    """Decimals as ``{"$decimal": "…"}``: a field's own encoder, which the ORM applies."""

    def default(self, o):
        if isinstance(o, decimal.Decimal):
            return {"$decimal": str(o)}
        return super().default(o)


class TaggedDecoder(json.JSONDecoder):
    def __init__(self, **kwargs):
        super().__init__(object_hook=self.hook, **kwargs)

    @staticmethod
    def hook(o):
        return decimal.Decimal(o["$decimal"]) if set(o) == {"$decimal"} else o


@pytest.fixture
def Record():  # noqa: N802 - a model class
    """Every column type the project's models use, an encrypted field and an encoded JSON."""
    with isolate_apps("communication"):

        class Record(models.Model):
            id = models.UUIDField(primary_key=True, default=uuid.uuid4)
            secret = EncryptedTextField()
            sealed = EncryptedJSONField(null=True)
            document = models.JSONField(encoder=TaggedEncoder, decoder=TaggedDecoder)
            scalar = models.JSONField(null=True)
            blob = models.BinaryField(null=True)
            amount = models.DecimalField(max_digits=12, decimal_places=6, null=True)
            day = models.DateField(null=True)
            at = models.DateTimeField(null=True)
            created_at = models.DateTimeField(auto_now_add=True)
            span = models.DurationField(null=True)
            tags = ArrayField(models.CharField(max_length=20), default=list)
            documents = ArrayField(
                models.JSONField(encoder=TaggedEncoder, decoder=TaggedDecoder), default=list
            )
            ref = models.UUIDField(null=True)
            count = models.IntegerField(default=0)
            ratio = models.FloatField(null=True)
            flag = models.BooleanField(default=False)
            text = models.TextField(blank=True)

            class Meta:
                app_label = "communication"
                db_table = "test_rows_record"

        with connection.schema_editor() as editor:
            editor.create_model(Record)
        yield Record


SECRET = "IBAN FR76 3000 6000 0112 3456 7890 189"


def record_values() -> dict:
    return {
        "secret": SECRET,
        "sealed": {"card": "4970 1000 0000 0063", "limit": 1500},
        "document": {"amount": decimal.Decimal("12.50"), "note": 'quote " and \\ é', "n": None},
        "scalar": "just a string",  # a JSON string, not the text of a document
        "blob": bytes(range(256)),
        "amount": decimal.Decimal("-1234.000001"),
        "day": dt.date(1999, 12, 31),
        "at": dt.datetime(2026, 3, 29, 1, 30, 0, 999999, tzinfo=dt.UTC),
        "span": -dt.timedelta(days=1, seconds=3723, microseconds=5),
        "tags": ["a", "b,c", 'd"e', ""],
        "documents": [{"fee": decimal.Decimal("0.30")}, ["x"], "y"],
        "ref": uuid.UUID(int=42),
        "count": -7,
        "ratio": 0.1,
        "flag": True,
        "text": "line\nnext\ttab",
    }


def test_rows_writes_each_field_as_the_orm_does_encrypted_and_encoded_included(Record):  # noqa: N803
    by_orm = Record.objects.create(**record_values())
    by_rows = Record(**record_values())
    empty = Record(secret="", document={})  # NULLs and defaults

    rows.insert_all([[by_rows, empty]])

    table = Record._meta.db_table
    read = Record.objects.in_bulk([by_orm.id, by_rows.id, empty.id])
    for name, value in record_values().items():
        assert getattr(read[by_rows.id], name) == getattr(read[by_orm.id], name) == value, name
    assert read[by_rows.id].created_at == by_rows.created_at  # auto_now_add, to the microsecond
    assert isinstance(read[by_rows.id].document["amount"], decimal.Decimal)  # the encoder's form
    assert (read[empty.id].sealed, read[empty.id].scalar, read[empty.id].blob) == (None,) * 3
    assert (read[empty.id].secret, read[empty.id].tags) == ("", [])

    with connection.cursor() as cursor:
        # The same stored form, column by column, except the (randomly) encrypted ones.
        cursor.execute(
            f"SELECT to_jsonb(t) - 'id' - 'created_at' - 'secret' - 'sealed' FROM {table} AS t"  # noqa: S608
            " WHERE id = ANY(%s) ORDER BY id = %s",
            [[by_orm.id, by_rows.id], by_rows.id],
        )
        orm_stored, rows_stored = (json.loads(row[0]) for row in cursor.fetchall())
        assert rows_stored == orm_stored
        assert rows_stored["document"]["amount"] == {"$decimal": "12.50"}
        # The ciphertext is what the table holds: the plaintext is nowhere in the row.
        cursor.execute(
            f"SELECT secret, sealed, t::text FROM {table} AS t WHERE id = %s",  # noqa: S608
            [by_rows.id],
        )
        secret, sealed, whole = cursor.fetchone()
        assert SECRET.encode() not in bytes(secret) and b"4970" not in bytes(sealed)
        assert "IBAN" not in whole and "4970" not in whole
        # ``instance`` reads a raw row as the ORM does: decrypted and decoded.
        cursor.execute(
            f"SELECT {rows.select_list(Record, 'r')} FROM {table} AS r WHERE id = %s",  # noqa: S608
            [by_rows.id],
        )
        instance = rows.instance(Record, cursor.fetchone())
    for name, value in record_values().items():
        assert getattr(instance, name) == value, name
    assert not instance._state.adding
