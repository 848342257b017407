"""Static list members and campaign recipients encrypted at rest: each write path (the members'
``COPY`` + ``INSERT … SELECT``, the CSV import through it, the audience's set-based
``INSERT … SELECT`` from a list or a segment, the next step's copy, the migration of existing
rows) leaves ciphertext that reads back; an address-only row is keyed by its address's hash."""

from __future__ import annotations

import pytest
import tablib
from django.db import connection
from django.utils import timezone

from campaigns.imports import StaticListMemberResource
from campaigns.models import CampaignRecipient, CampaignRun, StaticList, StaticListMember
from campaigns.services import fanout, lists, runs
from campaigns.tests import factories
from communication.compliance import erasure
from conftest import assert_encrypted, before_migration, stored
from notifications.models import Delivery

pytestmark = pytest.mark.django_db

EMAIL, PHONE = "Guest.One@Example.com", "+33 6 12 34 56 78"
EMAIL_N, PHONE_N = "guest.one@example.com", "+33612345678"


def _written(path: str, static: StaticList) -> None:
    rows = [
        {"email": EMAIL, "data": {"code": "secret-code-1"}},
        {"phone": PHONE, "data": {"code": "secret-code-2"}},
    ]
    if path == "service":
        result = lists.members_add(static_list=static, rows=rows)
        assert (result.added, result.errors) == (2, [])
        return
    dataset = tablib.Dataset(headers=["email", "phone", "code"])
    for row in rows:
        dataset.append([row.get("email", ""), row.get("phone", ""), row["data"]["code"]])
    done = StaticListMemberResource(static_list=static).import_data(dataset)
    assert done.totals["new"] == 2, done.totals


@pytest.mark.parametrize("path", ["service", "csv_import"])
def test_list_members_are_ciphertext_keyed_by_hash(path, admin_client):
    static = StaticList.objects.create(name="Guests")
    _written(path, static)

    by_email = static.members.get(key=lists.address_key(EMAIL_N))
    by_phone = static.members.get(key=lists.address_key(PHONE_N))
    assert_encrypted(by_email, "email", EMAIL_N)
    assert_encrypted(by_email, "data", "secret-code-1")
    assert_encrypted(by_phone, "phone", PHONE_N)
    assert_encrypted(by_phone, "data", "secret-code-2")
    assert_encrypted(by_email, "phone")  # the blank one is ciphertext too
    assert EMAIL_N not in by_email.key

    # The same address again is the same member (the key dedups), its data replaced.
    again = lists.members_add(static_list=static, rows=[{"email": EMAIL, "data": {"code": "new"}}])
    assert (again.added, again.updated) == (0, 1)
    assert static.members.count() == 2
    assert static.members.get(key=lists.address_key(EMAIL_N)).data == {"code": "new"}

    # Staff find a member by its exact address (the key's hash), however it is written.
    for term, count in ((EMAIL, 1), (PHONE, 1), ("guest.one", 0)):
        page = admin_client.get("/admin/campaigns/staticlistmember/", {"q": term})
        assert page.status_code == 200 and len(page.context["cl"].result_list) == count, term


def _drain(run: CampaignRun, step) -> None:
    while fanout.fanout_batch(run.id, step.id).outcome == "more":
        pass
    fanout.fanout_finished(run.id)


@pytest.fixture
def _nobody_consumes(settings):
    settings.CELERY_QUEUE_PREFIX = "encryption-nobody-"


@pytest.mark.usefixtures("_nobody_consumes")
@pytest.mark.parametrize("audience", ["static_list", "segment"])
def test_launch_materialises_recipients_as_ciphertext(audience):
    """The audience's INSERT … SELECT copies a member's ciphertext, or writes the encrypted
    blanks for a segment's users (their address read from the user row at send time); the
    fan-out decrypts them and sends to the right addresses."""
    user = factories.users("enc", 1)[0]
    if audience == "static_list":
        static = StaticList.objects.create(name="Guests")
        lists.members_add(
            static_list=static,
            rows=[{"email": EMAIL, "data": {"code": "secret-code-1"}}, {"user_id": "enc0"}],
        )
        campaign = factories.campaign(
            static=static, steps=[{"content": {"subject": "Code", "body": "{{ code }}"}}]
        )
    else:
        campaign = factories.campaign(segment=factories.segment_of("enc"))
    run = runs.run_start(campaign, timezone.now())
    assert run is not None

    rows = {r.key: r for r in CampaignRecipient.objects.filter(run=run)}
    mine = rows.pop("enc0")
    assert mine.user_id == user.pk and (mine.email, mine.phone, mine.data) == ("", "", {})
    for name in ("email", "phone", "data"):
        assert_encrypted(mine, name)
    if audience == "static_list":
        (guest,) = rows.values()
        assert guest.key == lists.address_key(EMAIL_N)
        assert_encrypted(guest, "email", EMAIL_N)
        assert_encrypted(guest, "data", "secret-code-1")
        # Copied as stored: the same ciphertext as the member's.
        member = StaticListMember.objects.get(key=guest.key)
        assert stored(CampaignRecipient, "email", guest.pk) == stored(
            StaticListMember, "email", member.pk
        )
    else:
        assert not rows

    _drain(run, campaign.steps.get())
    sent = set(
        Delivery.objects.filter(notification__request__run_id=run.id).values_list(
            "address", flat=True
        )
    )
    assert sent == (
        {EMAIL_N, "enc0@example.com"} if audience == "static_list" else {"enc0@example.com"}
    )


@pytest.mark.usefixtures("_nobody_consumes")
def test_erasure_finds_address_rows_by_key_hash():
    static = StaticList.objects.create(name="Guests")
    lists.members_add(static_list=static, rows=[{"email": EMAIL}, {"email": "other@example.com"}])
    campaign = factories.campaign(static=static)
    run = runs.run_start(campaign, timezone.now())
    assert run is not None

    erasure.erase("email", EMAIL, requested_by="test")

    assert list(static.members.values_list("email", flat=True)) == ["other@example.com"]
    erased = CampaignRecipient.objects.exclude(key=lists.address_key("other@example.com")).get()
    assert erased.key.startswith("erased:") and (erased.email, erased.data) == ("", {})
    assert_encrypted(erased, "email")


def test_migration_encrypts_existing_members_and_recipients():
    """Back to before the migration, rows as they were (plain columns, the address as key),
    then forward: ciphertext that reads back, address keys hashed, user keys unchanged."""
    user = factories.users("mig", 1)[0]
    static = StaticList.objects.create(name="Old")
    campaign = factories.campaign(static=static)
    run = CampaignRun.objects.create(campaign=campaign, slot=timezone.now())
    step = campaign.steps.get()
    migration = "0003_encrypt_members_recipients"
    with before_migration("campaigns", migration), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO campaigns_staticlistmember (static_list_id, key, user_id, email, "
            "phone, data) VALUES (%s, 'old@example.com', NULL, 'old@example.com', '', "
            "'{\"code\": \"c1\"}'), (%s, 'mig0', %s, '', '', '{}')",
            [static.pk, static.pk, user.pk],
        )
        cursor.execute(
            "INSERT INTO campaigns_campaignrecipient (run_id, step_id, key, user_id, email, "
            "phone, data, state, reason) VALUES "
            "(%s, %s, '+33612345678', NULL, '', '+33612345678', '{\"code\": \"c2\"}', "
            "'pending', '')",
            [run.pk, step.pk],
        )

    member = StaticListMember.objects.get(key=lists.address_key("old@example.com"))
    assert_encrypted(member, "email", "old@example.com")
    assert_encrypted(member, "data", "c1")
    assert StaticListMember.objects.get(key="mig0").user_id == user.pk
    recipient = CampaignRecipient.objects.get(key=lists.address_key(PHONE_N))
    assert_encrypted(recipient, "phone", PHONE_N)
    assert_encrypted(recipient, "data", "c2")
