"""Campaigns' personal data, declared in the compliance registry."""

from __future__ import annotations

from django.db.models import Q

from communication.compliance.registry import Erase, PersonalData, Subject, register


def _addressed(subject: Subject) -> Q:
    # An address-only row is keyed by its address's hash (the address is encrypted).
    from campaigns.services.lists import address_key  # noqa: PLC0415

    q = Q(user__in=subject.users)
    addresses = [*subject.emails, *subject.phones]
    if addresses:
        q |= Q(key__in=[address_key(a) for a in addresses])
    if subject.user_ids:
        q |= Q(key__in=subject.user_ids)
    return q


def _erased_key(pk) -> str:
    return f"erased:{pk}"


register(
    PersonalData(
        name="campaigns.list_members",
        model="campaigns.StaticListMember",
        rows=_addressed,
        erase=Erase.DELETE,
        export=("static_list_id", "created_at"),
    ),
    PersonalData(
        name="campaigns.recipients",
        model="campaigns.CampaignRecipient",
        rows=_addressed,
        # The ledger row stays (a run is never sent twice to anyone); its key no longer names
        # the person.
        erase=Erase.ANONYMISE,
        fields={"key": _erased_key, "email": "", "phone": "", "data": {}},
        export=("run_id", "step_id", "state", "created_at"),
    ),
)
