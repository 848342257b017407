"""Messaging's personal data, declared in the compliance registry."""

from __future__ import annotations

from django.db.models import Q
from django.db.models.lookups import Exact

from communication.compliance.registry import Erase, PersonalData, Subject, register

# The offline-message notifications another participant received quote the subject's name (the
# title) and words (the body): messaging sends them as this caller.
OFFLINE_CALLER = "messaging"
# The idempotency keys of those notifications in a set of conversations (``{}``: their ids
# joined by ``|``), as ``messaging.services.offline.offline_key`` makes them.
OFFLINE_KEY_OF = "^messages:[^:]+:({}):"


def _download_link(row: dict, user_pk) -> dict:
    # Made for the person themselves: the download checks that its user may see the file.
    from django.conf import settings  # noqa: PLC0415

    from messaging import attachments  # noqa: PLC0415

    base = settings.PUBLIC_BASE_URL.rstrip("/")
    return {"url": base + attachments.signed_url(row["id"], user_pk)}


def _storage():
    from messaging import attachments  # noqa: PLC0415

    return attachments.storage()


def _expire_edits(cutoff) -> int:
    # An edit's earlier text goes with the message it belongs to, whenever it was edited.
    from communication.compliance import registry, retention  # noqa: PLC0415
    from messaging.models import MessageEdit  # noqa: PLC0415

    entry = registry.get("messaging.edits")
    return retention.expire_rows(entry, MessageEdit.objects.filter(message__sent_at__lt=cutoff))


def _spoken_in(subject: Subject):
    from messaging.models import Message  # noqa: PLC0415

    return (
        Message.objects.filter(sender__in=subject.users)
        .values_list("conversation_id", flat=True)
        .distinct()
    )


def _offline_notifications(subject: Subject) -> Q:
    # Found through the conversations the subject wrote in (the notification names the last
    # message only); other people's notifications there lose their title and body too. Their
    # title, body and data may be encrypted: the request's idempotency key, which
    # ``messaging.services.offline`` makes, names the conversation in plain.
    if not subject.users:
        return Q(pk__in=[])
    conversations = [str(c) for c in _spoken_in(subject)]
    if not conversations:
        return Q(pk__in=[])
    return Q(
        request__caller=OFFLINE_CALLER,
        request__idempotency_key__regex=OFFLINE_KEY_OF.format("|".join(conversations)),
    )


def _offline_notification_ids(subject: Subject):
    from notifications.models import Notification  # noqa: PLC0415

    return Notification.objects.filter(_offline_notifications(subject)).values("id")


def _offline_outbox(subject: Subject) -> Q:
    if not subject.users:
        return Q(pk__in=[])
    return Q(delivery__notification__in=_offline_notification_ids(subject))


def _offline_requests(subject: Subject) -> Q:
    if not subject.users:
        return Q(pk__in=[])
    # (Encrypted content: an empty one is told by its length.)
    from communication.fields import PlaintextLength  # noqa: PLC0415

    return Q(notifications__in=_offline_notification_ids(subject)) & ~Q(
        Exact(PlaintextLength("content"), 2)
    )


def _offline_realtime(subject: Subject) -> Q:
    # The recipients' websocket logs repeat those notifications' title and body. An event's
    # payload is sealed (encrypted): the recipients' notification events are read and those
    # naming one of the notifications kept.
    from communication.models import RealtimeEvent  # noqa: PLC0415
    from notifications.models import Notification  # noqa: PLC0415

    if not subject.users:
        return Q(pk__in=[])
    found = Notification.objects.filter(_offline_notifications(subject))
    ids = {str(pk) for pk in found.values_list("id", flat=True)}
    if not ids:
        return Q(pk__in=[])
    events = RealtimeEvent.objects.filter(
        type="notification.created", user__in=found.values("user_id")
    ).only("id", "data", "sealed")
    return Q(pk__in=[e.pk for e in events.iterator() if str(e.payload.get("id")) in ids])


def _presence_keys(subject: Subject) -> int:
    """The subject's Redis presence: their sockets' sorted set, their entry in the online
    index and their offline-notification bursts. Returns how many keys or entries went."""
    from messaging import presence  # noqa: PLC0415

    if not subject.users:
        return 0
    client = presence.client()
    prefix = presence._prefix()
    removed = 0
    for pk in subject.users:
        keys = [presence._user_key(pk)]
        keys += list(client.scan_iter(match=f"{prefix}:notify:{pk}:*", count=500))
        removed += client.delete(*keys)
        removed += client.zrem(presence._users_key(), str(pk))
    return removed


register(
    PersonalData(
        name="messaging.offline_outbox",
        model="notifications.OutboxMessage",
        rows=_offline_outbox,
        erase=Erase.DELETE,
        order=30,
    ),
    PersonalData(
        name="messaging.offline_requests",
        model="notifications.NotificationRequest",
        rows=_offline_requests,
        erase=Erase.ANONYMISE,
        fields={"content": {}},
        order=30,
    ),
    PersonalData(
        name="messaging.offline_realtime",
        model="communication.RealtimeEvent",
        rows=_offline_realtime,
        erase=Erase.DELETE,
        order=30,
    ),
    PersonalData(
        name="messaging.offline_notifications",
        model="notifications.Notification",
        rows=_offline_notifications,
        erase=Erase.ANONYMISE,
        fields={"title": "", "body": ""},
        order=35,
    ),
    PersonalData(
        name="messaging.edits",
        model="messaging.MessageEdit",
        rows=lambda s: Q(message__sender__in=s.users) | Q(edited_by__in=s.users),
        erase=Erase.DELETE,
        retention="messages",
        age_field="edited_at",
        expirer=_expire_edits,
        order=40,
    ),
    PersonalData(
        name="messaging.attachments",
        model="messaging.Attachment",
        rows=lambda s: Q(uploader__in=s.users),
        erase=Erase.DELETE,
        files=("file", "thumbnail"),
        storage=_storage,
        retention="attachments",
        export=("id", "content_type", "size", "original_name", "created_at"),
        export_links=_download_link,
        order=40,
    ),
    PersonalData(
        name="messaging.messages",
        model="messaging.Message",
        # Not yet tombstoned (a tombstone's content is blank: a deletion, an erasure and an
        # expiry blank it with the mark), so a second erasure finds nothing. The content is
        # encrypted: the mark, not the content, tells them apart.
        rows=lambda s: Q(sender__in=s.users, deleted_at__isnull=True),
        # The row stays as "message deleted" so that replies and threads keep their place.
        erase=Erase.TOMBSTONE,
        tombstone_field="deleted_at",
        fields={"content": "", "html": "", "metadata": {}},
        retention="messages",
        age_field="sent_at",
        export=("id", "conversation_id", "type", "content", "parent_id", "sent_at", "edited_at"),
        order=50,
    ),
    PersonalData(
        # Public keys only (the private keys never leave the devices); they name the user's
        # devices, so they go with the user.
        name="messaging.device_keys",
        model="messaging.DeviceKey",
        rows=lambda s: Q(user__in=s.users),
        erase=Erase.DELETE,
        export=("device_id", "identity_key", "signed_prekey", "signing_key", "updated_at"),
    ),
    PersonalData(
        name="messaging.presence",
        model="messaging.UserPresence",
        rows=lambda s: Q(user__in=s.users),
        erase=Erase.DELETE,
    ),
    PersonalData(
        name="messaging.presence_keys",
        model="messaging.UserPresence",
        rows=None,
        erase=Erase.DELETE,
        eraser=_presence_keys,
    ),
)
