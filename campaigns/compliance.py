"""Campaigns' personal data, declared in the compliance registry."""

from __future__ import annotations

from django.db.models import Q

from communication.compliance.registry import Erase, PersonalData, Subject, register


def _addressed(subject: Subject) -> Q:
    q = Q(user__in=subject.users)
    if subject.emails:
        q |= Q(email__in=subject.emails) | Q(key__in=subject.emails)
    if subject.phones:
        q |= Q(phone__in=subject.phones) | Q(key__in=subject.phones)
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
