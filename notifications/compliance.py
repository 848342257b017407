"""Notifications' personal data, declared in the compliance registry."""

from __future__ import annotations

import datetime as dt

from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Now

from communication.compliance.keyed import lookup_hash
from communication.compliance.registry import Erase, PersonalData, Subject, register


def _by_user(subject: Subject) -> Q:
    return Q(user__in=subject.users)


# Addresses are encrypted: a person's rows are found by the keyed hashes beside them.


def _hashes(values) -> list[str]:
    return [lookup_hash(v) for v in values]


def _by_address(subject: Subject, prefix: str = "") -> Q:
    """Rows whose ``email_hash`` / ``phone_hash`` (under ``prefix``) is one of the subject's."""
    q = Q(pk__in=[])
    if subject.emails:
        q |= Q(**{f"{prefix}email_hash__in": _hashes(subject.emails)})
    if subject.phones:
        q |= Q(**{f"{prefix}phone_hash__in": _hashes(subject.phones)})
    return q


def _cap_slots(subject: Subject) -> Q:
    # ``CapSlot.subject``: ``u:<user pk>`` or ``a:<address hash>`` (notifications.services.caps).
    people = [f"u:{pk}" for pk in subject.users]
    people += [f"a:{h}" for h in _hashes([*subject.emails, *subject.phones])]
    return Q(subject__in=people)


def _notifications(subject: Subject) -> Q:
    return Q(user__in=subject.users) | _by_address(subject)


def _deliveries(subject: Subject) -> Q:
    q = Q(notification__user__in=subject.users)
    addresses = [*subject.emails, *subject.phones]
    if addresses:
        q |= Q(address_hash__in=_hashes(addresses)) | _by_address(subject, "notification__")
    return q


def _outbox(subject: Subject) -> Q:
    q = Q(delivery__notification__user__in=subject.users)
    addresses = [*subject.emails, *subject.phones]
    if addresses:
        q |= Q(to_hash__in=_hashes(addresses))
    return q


def _single_requests(subject: Subject) -> Q:
    # A request's content and variables belong to its recipient only when it had one: those of a
    # request to several people are theirs too (and their deliveries still render from them); a
    # bulk request's per-recipient rows are BulkRecipient.
    from django.db.models import Count  # noqa: PLC0415

    from notifications.models import Notification, NotificationRequest  # noqa: PLC0415

    mine = Notification.objects.filter(_notifications(subject)).values("request_id")
    single = (
        NotificationRequest.objects.filter(pk__in=mine, bulk=False)
        .annotate(recipients=Count("notifications"))
        .filter(recipients=1)
        .values("pk")
    )
    # (Encrypted content cannot be compared in SQL: an empty one is blanked again, harmlessly.)
    return Q(pk__in=single)


def _pending_deliveries(subject: Subject) -> Q:
    return _deliveries(subject) & Q(status__in=["scheduled", "held", "queued"])


def _bulk_recipients(subject: Subject) -> Q:
    return Q(user__in=subject.users) | _by_address(subject)


def _suppressions(subject: Subject) -> Q:
    # By hash (the address is encrypted), only rows that still show an address: an erased one
    # keeps its hash and nothing else.
    from notifications.models import suppression_hash  # noqa: PLC0415

    by_hash = Q(
        channel="email", address_hash__in=[suppression_hash(e) for e in subject.emails]
    ) | Q(channel="sms", address_hash__in=[suppression_hash(p) for p in subject.phones])
    return by_hash & Q(address__isnull=False)


def _suppress_erased(subject: Subject) -> int:
    """Suppresses each of the subject's addresses by hash alone (reason ``erased``), so that an
    erased person is never mailed or texted again at them; an address already suppressed keeps
    its entry. Returns how many were added."""
    from django.db import connection  # noqa: PLC0415

    from notifications.models import Suppression, suppression_hash  # noqa: PLC0415

    pairs = [("email", e) for e in subject.emails] + [("sms", p) for p in subject.phones]
    if not pairs:
        return 0
    rows = [(channel, suppression_hash(address)) for channel, address in pairs]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO notifications_suppression "
            "(channel, address, address_hash, reason, detail, created_at) "
            "SELECT c, NULL, h, %s, '', now() FROM unnest(%s::text[], %s::text[]) AS t(c, h) "
            "ON CONFLICT (channel, address_hash) DO NOTHING",
            [Suppression.Reason.ERASED, [c for c, _ in rows], [h for _, h in rows]],
        )
        return cursor.rowcount


def _idempotency_keys(subject: Subject) -> Q:
    # A stored answer (encrypted) repeats the recipients as the caller named them: the keys of
    # the requests that wrote the subject's notifications (found by user or address hash).
    from notifications.models import Notification, NotificationRequest  # noqa: PLC0415

    requests = NotificationRequest.objects.filter(
        caller=OuterRef("caller"),
        idempotency_key=OuterRef("key"),
        pk__in=Notification.objects.filter(_notifications(subject)).values("request_id"),
    )
    return Q(Exists(requests))


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
    # What has not gone yet never goes: to an address about to be blanked, from content about
    # to be blanked.
    PersonalData(
        name="notifications.pending_deliveries",
        model="notifications.Delivery",
        rows=_pending_deliveries,
        erase=Erase.ANONYMISE,
        fields={"status": "cancelled", "cancelled_at": Now()},
        order=55,
    ),
    PersonalData(
        name="notifications.deliveries",
        model="notifications.Delivery",
        rows=_deliveries,
        erase=Erase.ANONYMISE,
        # Provider answers and errors may quote the address or a device token.
        fields={
            "address": "",
            "address_hash": "",
            "error": "",
            "device_results": {},
            "reason": "",
        },
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
            "email_hash": "",
            "phone": "",
            "phone_hash": "",
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
    PersonalData(
        name="notifications.idempotency_keys",
        model="notifications.IdempotencyKey",
        rows=_idempotency_keys,
        erase=Erase.DELETE,
        order=50,
    ),
    # The suppression list keeps the keyed hash of an erased address, never the address.
    PersonalData(
        name="notifications.suppressions",
        model="notifications.Suppression",
        rows=_suppressions,
        erase=Erase.ANONYMISE,
        fields={"address": None, "detail": ""},
        export=("channel", "reason", "created_at"),
        order=80,
    ),
    PersonalData(
        name="notifications.erased_addresses",
        model="notifications.Suppression",
        rows=None,
        erase=Erase.ANONYMISE,
        eraser=_suppress_erased,
        order=81,
    ),
    # Frequency-cap places name the person (user id or address hash) and when they were sent to.
    PersonalData(
        name="notifications.cap_slots",
        model="notifications.CapSlot",
        rows=_cap_slots,
        erase=Erase.DELETE,
        order=50,
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
