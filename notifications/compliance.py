"""Notifications' personal data, declared in the compliance registry."""

from __future__ import annotations

import datetime as dt

from django.db.models import Exists, OuterRef, Q

from communication.compliance.registry import Erase, PersonalData, Subject, register


def _by_user(subject: Subject) -> Q:
    return Q(user__in=subject.users)


def _notifications(subject: Subject) -> Q:
    q = Q(user__in=subject.users)
    if subject.emails:
        q |= Q(email__in=subject.emails)
    if subject.phones:
        q |= Q(phone__in=subject.phones)
    return q


def _deliveries(subject: Subject) -> Q:
    q = Q(notification__user__in=subject.users)
    addresses = [*subject.emails, *subject.phones]
    if addresses:
        q |= Q(address__in=addresses) | Q(notification__email__in=subject.emails)
        q |= Q(notification__phone__in=subject.phones)
    return q


def _outbox(subject: Subject) -> Q:
    q = Q(delivery__notification__user__in=subject.users)
    addresses = [*subject.emails, *subject.phones]
    if addresses:
        q |= Q(to__in=addresses)
    return q


def _single_requests(subject: Subject) -> Q:
    # A request's content and variables belong to its recipient only when it had one: a bulk
    # request's shared variables stay (its per-recipient rows are BulkRecipient).
    return Q(bulk=False, notifications__in=_notification_ids(subject))


def _notification_ids(subject: Subject):
    from notifications.models import Notification  # noqa: PLC0415

    return Notification.objects.filter(_notifications(subject)).values("id")


def _bulk_recipients(subject: Subject) -> Q:
    q = Q(user__in=subject.users)
    if subject.emails:
        q |= Q(email__in=subject.emails)
    if subject.phones:
        q |= Q(phone__in=subject.phones)
    return q


def _delivery_events(subject: Subject) -> Q:
    from notifications.models import Delivery  # noqa: PLC0415

    return Q(delivery_id__in=Delivery.objects.filter(_deliveries(subject)).values("id"))


def _settled() -> tuple[str, ...]:
    # What retention may remove: a final state, or sent (only a receipt may still come, and
    # many channels never send one). Scheduled, queued, sending and ambiguous ones stay.
    from notifications.models import Delivery  # noqa: PLC0415

    return (*Delivery.FINAL, Delivery.Status.SENT)


def _expire_deliveries(cutoff: dt.datetime) -> int:
    from communication.compliance import registry, retention  # noqa: PLC0415

    entry = registry.get("notifications.deliveries")
    rows = retention.expired_rows(entry, cutoff).filter(status__in=_settled())
    return retention.expire_rows(entry, rows)


def _expire_notifications(cutoff: dt.datetime) -> int:
    # A notification goes only once none of its deliveries is still to be sent.
    from communication.compliance import registry, retention  # noqa: PLC0415
    from notifications.models import Delivery  # noqa: PLC0415

    entry = registry.get("notifications.notifications")
    pending = Delivery.objects.filter(notification=OuterRef("pk")).exclude(status__in=_settled())
    rows = retention.expired_rows(entry, cutoff).exclude(Exists(pending))
    return retention.expire_rows(entry, rows)


def _expire_requests(cutoff: dt.datetime) -> int:
    # A request's content goes once nothing points at it any more: its notifications expired
    # (a run before) and no bulk recipient waits to be fanned out.
    from communication.compliance import registry, retention  # noqa: PLC0415
    from notifications.models import BulkRecipient, Notification  # noqa: PLC0415

    entry = registry.get("notifications.requests")
    rows = (
        retention.expired_rows(entry, cutoff)
        .exclude(Exists(Notification.objects.filter(request=OuterRef("pk"))))
        .exclude(Exists(BulkRecipient.objects.filter(request=OuterRef("pk"))))
    )
    return retention.expire_rows(entry, rows)


register(
    # The analytics events of the subject's deliveries, those to a bare address included: found
    # through the deliveries, hence before those lose their addresses.
    PersonalData(
        name="notifications.delivery_events",
        model="analytics.Event",
        rows=_delivery_events,
        erase=Erase.ANONYMISE,
        fields={"data": {}},
        order=10,
    ),
    PersonalData(
        name="notifications.preferences",
        model="notifications.NotificationPreference",
        rows=_by_user,
        erase=Erase.DELETE,
        export=("category_id", "channel", "enabled", "updated_at"),
    ),
    PersonalData(
        name="notifications.quiet_hours",
        model="notifications.QuietHours",
        rows=_by_user,
        erase=Erase.DELETE,
        export=("start", "end", "enabled", "updated_at"),
    ),
    PersonalData(
        name="notifications.consents",
        model="notifications.Consent",
        rows=_by_user,
        erase=Erase.DELETE,
        export=("channel", "category_id", "granted", "source", "created_at"),
    ),
    PersonalData(
        name="notifications.devices",
        model="notifications.Device",
        rows=_by_user,
        erase=Erase.DELETE,
        export=("platform", "app_id", "browser", "locale", "active", "created_at"),
    ),
    PersonalData(
        name="notifications.outbox",
        model="notifications.OutboxMessage",
        rows=_outbox,
        erase=Erase.DELETE,
        retention="outbox",
        order=50,
    ),
    PersonalData(
        name="notifications.requests",
        model="notifications.NotificationRequest",
        rows=_single_requests,
        erase=Erase.ANONYMISE,
        fields={"content": {}, "data": {}},
        retention="notifications",
        expire=Erase.DELETE,
        expirer=_expire_requests,
        order=50,
    ),
    PersonalData(
        name="notifications.bulk_recipients",
        model="notifications.BulkRecipient",
        rows=_bulk_recipients,
        erase=Erase.DELETE,
        order=50,
    ),
    PersonalData(
        name="notifications.deliveries",
        model="notifications.Delivery",
        rows=_deliveries,
        erase=Erase.ANONYMISE,
        # Provider answers and errors may quote the address or a device token.
        fields={"address": "", "error": "", "device_results": {}, "reason": ""},
        retention="deliveries",
        expire=Erase.DELETE,
        expirer=_expire_deliveries,
        export=("channel", "status", "provider", "sent_at", "delivered_at", "created_at"),
        order=60,
    ),
    PersonalData(
        name="notifications.notifications",
        model="notifications.Notification",
        rows=_notifications,
        erase=Erase.ANONYMISE,
        # The row stays so that every send is still accounted for; what it said and to whom goes.
        fields={
            "recipient": {},
            "email": "",
            "phone": "",
            "title": "",
            "body": "",
            "action_url": "",
            "data": {},
        },
        retention="notifications",
        expire=Erase.DELETE,
        expirer=_expire_notifications,
        export=("category_id", "title", "body", "action_url", "read_at", "created_at"),
        order=70,
    ),
    # Provider webhook de-duplication keys: no subject, only a retention clock.
    PersonalData(
        name="notifications.provider_events",
        model="notifications.ProviderEvent",
        rows=None,
        erase=Erase.DELETE,
        retention="provider_payloads",
        age_field="received_at",
    ),
)
