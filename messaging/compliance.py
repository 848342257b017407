"""Messaging's personal data, declared in the compliance registry."""

from __future__ import annotations

from django.db.models import Q

from communication.compliance.registry import Erase, PersonalData, register


def _storage():
    from messaging import attachments  # noqa: PLC0415

    return attachments.storage()


def _expire_edits(cutoff) -> int:
    # An edit's earlier text goes with the message it belongs to, whenever it was edited.
    from communication.compliance import registry, retention  # noqa: PLC0415
    from messaging.models import MessageEdit  # noqa: PLC0415

    entry = registry.get("messaging.edits")
    return retention.expire_rows(entry, MessageEdit.objects.filter(message__sent_at__lt=cutoff))


register(
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
        order=40,
    ),
    PersonalData(
        name="messaging.messages",
        model="messaging.Message",
        rows=lambda s: Q(sender__in=s.users),
        # The row stays as "message deleted" so that replies and threads keep their place.
        erase=Erase.TOMBSTONE,
        fields={"content": "", "html": "", "metadata": {}},
        retention="messages",
        age_field="sent_at",
        export=("id", "conversation_id", "type", "content", "parent_id", "sent_at", "edited_at"),
        order=50,
    ),
    PersonalData(
        name="messaging.presence",
        model="messaging.UserPresence",
        rows=lambda s: Q(user__in=s.users),
        erase=Erase.DELETE,
    ),
)
