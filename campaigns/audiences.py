"""A campaign's audience as SQL: the users its segment selects (one query, compiled by
``campaigns.segments``) or the members of its static list; and the one ``INSERT … SELECT`` that
writes a run's first-step recipients (the ledger) from it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignRun,
    CampaignStep,
    StaticListMember,
)
from campaigns.selectors import segment_users
from communication.fields import EncryptedField

# The ledger's columns an INSERT … SELECT writes, in this order.
_COLUMNS = "run_id, step_id, key, user_id, email, phone, data, state, reason, due_at, created_at, updated_at"


def audience_query(campaign: Campaign) -> QuerySet[Any] | None:
    """The audience's rows as ``key, user_id, email, phone, data`` (one SELECT), or None for a
    campaign without an audience."""
    if campaign.segment_id is not None:
        assert campaign.segment is not None
        return segment_users(rules=campaign.segment.rules, category=campaign.category_id).values(
            "external_id", "id"
        )
    if campaign.static_list_id is not None:
        return StaticListMember.objects.filter(static_list_id=campaign.static_list_id).values(
            "key", "user_id", "email", "phone", "data"
        )
    return None


def audience_count(campaign: Campaign) -> int:
    """How many recipients the audience has now (one SQL statement; 0 without an audience)."""
    query = audience_query(campaign)
    return query.count() if query is not None else 0


def audience_materialise(
    campaign: Campaign, run: CampaignRun, step: CampaignStep, *, due_at: dt.datetime
) -> int:
    """Writes one pending ledger row per audience member for ``run``'s ``step`` in ONE
    ``INSERT … SELECT … ON CONFLICT DO NOTHING`` (a repeat writes nothing); returns how many."""
    query = audience_query(campaign)
    if query is None:
        return 0
    inner, params = query.query.sql_with_params()
    blanks: list[Any] = []
    if campaign.segment_id is not None:
        # A segment's member is a user: keyed by the user id every API speaks, no own data
        # (its address is read from the user row at send time). The blank address and data
        # are encrypted once, the same ciphertext for every row.
        select = "a.external_id, a.id, %s, %s, %s"
        blanks = [_encrypted("email", ""), _encrypted("phone", ""), _encrypted("data", {})]
    else:
        # A member's address and data are ciphertext already: copied as they are.
        select = "a.key, a.user_id, a.email, a.phone, a.data"
    sql = (
        f"INSERT INTO {CampaignRecipient._meta.db_table} ({_COLUMNS}) "  # noqa: S608
        f"SELECT %s, %s, {select}, 'pending', '', %s, now(), now() FROM ({inner}) AS a "
        "ON CONFLICT DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [run.id, step.id, *blanks, due_at, *params])
        return cursor.rowcount


def _encrypted(name: str, value: Any) -> bytes | None:
    field = CampaignRecipient._meta.get_field(name)
    assert isinstance(field, EncryptedField)
    return field.encrypted(value)


def step_materialise(run: CampaignRun, previous: CampaignStep, step: CampaignStep) -> int:
    """Writes ``step``'s pending rows from ``previous``'s queued ones (one INSERT … SELECT of
    their keys and their encrypted address and data as stored; a repeat writes nothing): due
    ``step.delay`` after the previous message's send time (its ``due_at``, set when it was
    fanned out), or at ``step.send_at``; returns how many."""
    table = CampaignRecipient._meta.db_table
    params: list[Any]
    if step.send_at is not None:
        due, params = "%s::timestamptz", [step.send_at]
    else:
        due, params = "p.due_at + %s::interval", [step.delay or dt.timedelta(0)]
    sql = (
        f"INSERT INTO {table} ({_COLUMNS}) "  # noqa: S608
        f"SELECT p.run_id, %s, p.key, p.user_id, p.email, p.phone, p.data, 'pending', '', "
        f"{due}, now(), now() FROM {table} AS p "
        "WHERE p.run_id = %s AND p.step_id = %s AND p.state = 'queued' ON CONFLICT DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [step.id, *params, run.id, previous.id])
        return cursor.rowcount
