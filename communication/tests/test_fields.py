"""Encrypted model fields: what is stored is ciphertext, what is read is the value written."""

from __future__ import annotations

import base64
import os

import pytest
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.db import connection, models
from django.test.utils import isolate_apps

from communication.compliance.keyed import lookup_hash
from communication.fields import (
    DecryptionError,
    EncryptedJSONField,
    EncryptedTextField,
    LookupHashField,
    derived_key_id,
    header,
)

pytestmark = pytest.mark.django_db


def new_key(key_id: str = "") -> tuple[str, bytes]:
    raw = os.urandom(32)
    encoded = base64.urlsafe_b64encode(raw).decode()
    return (f"{key_id}:{encoded}" if key_id else encoded), raw


@pytest.fixture
def Sealed():  # noqa: N802 - a model class
    with isolate_apps("communication"):

        class Sealed(models.Model):
            note = EncryptedTextField(blank=True)
            profile = EncryptedJSONField(null=True)
            note_hash = LookupHashField(of="note")

            class Meta:
                app_label = "communication"
                db_table = "test_fields_sealed"

        with connection.schema_editor() as editor:
            editor.create_model(Sealed)
        yield Sealed


def stored(model, pk) -> bytes:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT note FROM {model._meta.db_table} WHERE id = %s", [pk])  # noqa: S608
        return bytes(cursor.fetchone()[0])


def test_values_read_back_as_written_and_stored_as_ciphertext(Sealed):  # noqa: N803
    note = "Patient 4711: allergic to penicillin. Ünïcode ✓"
    sealed = Sealed.objects.create(note=note, profile={"phone": "+33 6 12 34 56 78", "n": [1]})
    empty = Sealed.objects.create(note="", profile=None)

    read = Sealed.objects.get(id=sealed.id)
    assert read.note == note and read.profile == {"phone": "+33 6 12 34 56 78", "n": [1]}
    assert Sealed.objects.values_list("note", flat=True).get(id=empty.id) == ""
    assert Sealed.objects.get(id=empty.id).profile is None
    raw = stored(Sealed, sealed.id)
    assert note.encode() not in raw and b"penicillin" not in raw
    assert raw[:1] == b"\x02"  # the format's version
    # A fresh nonce per write: the same text twice is stored twice differently.
    again = Sealed.objects.create(note=note)
    assert stored(Sealed, again.id) != raw
    with connection.cursor() as cursor:
        cursor.execute("SELECT profile::text FROM test_fields_sealed WHERE id = %s", [sealed.id])
        assert "+33" not in cursor.fetchone()[0]


def test_an_old_key_still_decrypts_after_rotation_and_the_new_one_encrypts(Sealed, settings):  # noqa: N803
    old, old_raw = new_key()  # a bare key: its id is derived from it
    new, _ = new_key("2026-12")
    settings.FIELD_ENCRYPTION_KEYS = [old]
    before = Sealed.objects.create(note="written under the old key")

    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    after = Sealed.objects.create(note="written under the new key")
    assert Sealed.objects.get(id=before.id).note == "written under the old key"
    assert stored(Sealed, before.id).startswith(header(derived_key_id(old_raw)))
    assert stored(Sealed, after.id).startswith(header("2026-12"))

    settings.FIELD_ENCRYPTION_KEYS = [new]  # the old key removed
    assert Sealed.objects.get(id=after.id).note == "written under the new key"
    with pytest.raises(DecryptionError, match="no longer configured"):
        Sealed.objects.get(id=before.id)


def test_the_lookup_hash_finds_a_row_by_its_encrypted_value(Sealed):  # noqa: N803
    one = Sealed.objects.create(note="Ada@Example.org")
    Sealed.objects.bulk_create([Sealed(note="bob@example.org"), Sealed(note="")])
    found = Sealed.objects.get(note_hash=lookup_hash("ada@example.org "))
    assert found.id == one.id
    assert Sealed.objects.filter(note_hash=lookup_hash("bob@example.org")).count() == 1
    assert Sealed.objects.filter(note_hash="").count() == 1  # a blank source, a blank hash


@pytest.mark.parametrize("offset", [0, 3, 10, -1])  # version, key id, nonce, tag
def test_a_changed_byte_is_refused_not_decrypted(Sealed, offset):  # noqa: N803
    sealed = Sealed.objects.create(note="pay 100 EUR to account A")
    raw = bytearray(stored(Sealed, sealed.id))
    raw[offset] ^= 0x01
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE test_fields_sealed SET note = %s WHERE id = %s", [bytes(raw), sealed.id]
        )

    with pytest.raises(DecryptionError):
        Sealed.objects.get(id=sealed.id)


def test_encrypted_columns_cannot_be_filtered_on_except_null(Sealed):  # noqa: N803
    Sealed.objects.create(note="x", profile=None)
    with pytest.raises(FieldError):
        Sealed.objects.filter(note="x").count()
    assert Sealed.objects.filter(profile__isnull=True).count() == 1


def test_no_key_configured_is_a_configuration_error(Sealed, settings):  # noqa: N803
    settings.FIELD_ENCRYPTION_KEYS = []
    with pytest.raises(ImproperlyConfigured):
        Sealed.objects.create(note="x")
    for bad in (
        base64.urlsafe_b64encode(b"short").decode(),
        "not base64!",
        "bad id with spaces:" + new_key()[0],
        new_key("same")[0] + "," + new_key("same")[0],
    ):
        settings.FIELD_ENCRYPTION_KEYS = bad.split(",")
        with pytest.raises(ImproperlyConfigured):
            Sealed.objects.create(note="x")
