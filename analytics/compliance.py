"""Analytics' personal data, declared in the compliance registry."""

from __future__ import annotations

from django.db.models import Q

from communication.compliance.registry import Erase, PersonalData, Subject, register


def _events(subject: Subject) -> Q:
    # Events of deliveries to a bare address carry no user id: notifications declares those
    # (analytics knows no other app).
    return Q(user_id__in=subject.users)


register(
    PersonalData(
        name="analytics.events",
        model="analytics.Event",
        rows=_events,
        # Counts stay true; the clicked URL, user agent and provider text go.
        erase=Erase.ANONYMISE,
        fields={"data": {}},
        retention="events",
        age_field="occurred_at",
        export=("type", "channel", "category", "notification_id", "occurred_at"),
        order=10,
    ),
)
