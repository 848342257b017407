"""Conversations, participants, messages, their edit trail, attachments and last-seen presence.

Message ids are a bigint sequence: read and delivered watermarks, ``before``/``after`` paging and
unread counts all compare ids, so there is no row per message per reader.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils.text import Truncator

from communication.fields import EncryptedJSONField, EncryptedTextField

# Conditions shared by a constraint or partial index and the queries that must match it (an
# ``ON CONFLICT`` naming the partial unique index, a lookup of the row it keeps unique): one
# expression object, so the two cannot drift apart.
DIRECT_PAIR = Q(type="direct")
ACTIVE_MEMBER = Q(left_at__isnull=True)
CLIENT_ID_SET = ~Q(client_id="")

# How many members name a conversation that has no title.
NAMED_MEMBERS = 4


class ConversationType(models.TextChoices):
    DIRECT = "direct"
    GROUP = "group"
    SUPPORT = "support"


class Role(models.TextChoices):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    AGENT = "agent"


class NotificationLevel(models.TextChoices):
    ALL = "all"
    NONE = "none"


class MessageType(models.TextChoices):
    TEXT = "text"
    SYSTEM = "system"
    ATTACHMENT = "attachment"
    ENCRYPTED = "encrypted"


class Conversation(models.Model):
    """A thread of messages between participants.

    ``direct_key`` ("<lower user pk>:<higher user pk>", plus ":e2e" when encrypted) is set on
    direct conversations only; its unique constraint is what makes a second create of the same
    pair (and the same ``encrypted``) return the first.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=16, choices=ConversationType.choices)
    title = models.CharField(max_length=255, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_conversations",
        help_text="Support conversations: the agent handling it (a participant with role agent).",
    )
    direct_key = models.CharField(max_length=80, null=True, blank=True, editable=False)
    # End-to-end encrypted: messages are client-side ciphertext the server cannot read. Fixed at
    # creation (a send checks it once per process and caches it).
    encrypted = models.BooleanField(default=False, editable=False)
    archived = models.BooleanField(default=False)
    # Moved by every message. Not indexed (only a hard delete of messages, which happens with
    # their conversation, looks rows up by it), so that the update leaves that index alone.
    last_message = models.ForeignKey(
        "messaging.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    last_activity_at = models.DateTimeField(default=None, null=True, db_default=Now())
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["-last_activity_at"], name="conv_activity")]
        constraints = [
            models.UniqueConstraint(
                fields=["direct_key"],
                condition=DIRECT_PAIR,
                name="conversation_direct_pair_unique",
            ),
            models.CheckConstraint(
                condition=Q(type="direct", direct_key__isnull=False)
                | (~Q(type="direct") & Q(direct_key__isnull=True)),
                name="conversation_direct_key_iff_direct",
            ),
            models.CheckConstraint(
                condition=Q(type__in=ConversationType.values), name="conversation_type_valid"
            ),
        ]

    def __str__(self) -> str:
        if self.title:
            return self.title
        kind = self.get_type_display()
        # Set by the staff selector, which reads one name more than it shows.
        names = getattr(self, "participant_names", None)
        if names:
            others = " and others" if len(names) > NAMED_MEMBERS else ""
            return f"{kind}: {', '.join(names[:NAMED_MEMBERS])}{others}"
        return f"{kind} conversation {self.id.hex[:8]}"


class Participant(models.Model):
    """A user's membership of a conversation; ``left_at`` set means no longer a member.

    ``last_read_message`` / ``last_delivered_message`` are the receipt watermarks;
    ``notified_up_to`` is the last message id an offline notification covered.
    """

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="participants"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversation_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    left_at = models.DateTimeField(null=True, blank=True)
    # The watermarks move with every message. Not indexed (only a hard delete of messages,
    # which happens with their conversation, looks rows up by them): their updates change no
    # indexed column, so PostgreSQL makes them heap-only (HOT), without touching any index.
    last_read_message = models.ForeignKey(
        "messaging.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    last_delivered_message = models.ForeignKey(
        "messaging.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    notified_up_to = models.BigIntegerField(default=0)
    muted = models.BooleanField(default=False)
    muted_until = models.DateTimeField(null=True, blank=True)
    notification_level = models.CharField(
        max_length=16, choices=NotificationLevel.choices, default=NotificationLevel.ALL
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "user"], name="participant_once_per_conversation"
            ),
            models.CheckConstraint(
                condition=Q(role__in=Role.values), name="participant_role_valid"
            ),
        ]
        indexes = [
            models.Index(
                fields=["user", "conversation"],
                condition=ACTIVE_MEMBER,
                name="participant_active",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.conversation_id}"

    @property
    def active(self) -> bool:
        return self.left_at is None


class Message(models.Model):
    """A message; ``content`` is the raw Markdown, ``html`` its sanitised rendering.

    ``content``, ``html`` and ``metadata`` (the client's own JSON, which may quote anything)
    are encrypted at rest (``communication.fields``): no query filters or searches on them.

    A deleted message keeps its row as a tombstone (``deleted_at`` set, content blanked; the
    previous content is in ``MessageEdit``). ``client_id`` makes sends idempotent per sender and
    conversation.
    """

    id = models.BigAutoField(primary_key=True)
    # Every message writes each index: the (conversation, id) and (parent, id) indexes below
    # serve these foreign keys, so they have no single-column index of their own.
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sent_messages",
    )
    type = models.CharField(max_length=16, choices=MessageType.choices, default=MessageType.TEXT)
    content = EncryptedTextField(blank=True)
    html = EncryptedTextField(blank=True)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replies",
        db_index=False,
    )
    metadata = EncryptedJSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    client_id = models.CharField(max_length=64, blank=True, default="")
    sent_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["conversation", "id"], name="message_conv_id"),
            models.Index(
                fields=["parent", "id"], condition=Q(parent__isnull=False), name="message_thread"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "sender", "client_id"],
                condition=CLIENT_ID_SET,
                name="message_client_id_unique",
            ),
            models.CheckConstraint(
                condition=Q(type__in=MessageType.values), name="message_type_valid"
            ),
            models.CheckConstraint(
                condition=Q(type="system") | Q(sender__isnull=False) | Q(deleted_at__isnull=False),
                name="message_sender_unless_system",
            ),
        ]

    def __str__(self) -> str:
        """The sender and the first words (the sender is read unless selected with it)."""
        sender = self.sender if self.sender_id else None
        if self.type == MessageType.SYSTEM:
            who = "System"
        elif sender is None:
            who = "someone"
        else:
            who = sender.name or sender.external_id or sender.username
        if self.deleted_at is not None:
            what = "(deleted)"
        elif self.type == MessageType.ENCRYPTED:
            what = "(encrypted)"
        elif not self.content.strip():
            what = "(attachment)"
        else:
            what = Truncator(" ".join(self.content.split())).words(8, truncate=" …")
            what = Truncator(what).chars(80)
        return f"{who}: {what}"


class MessageEdit(models.Model):
    """The audit trail: the content a message had before an edit or a deletion (encrypted at
    rest, as the message's own)."""

    class Action(models.TextChoices):
        EDIT = "edit"
        DELETE = "delete"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="edits")
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.EDIT)
    previous_content = EncryptedTextField(blank=True)
    previous_metadata = EncryptedJSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    edited_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        ordering = ("edited_at", "id")

    def __str__(self) -> str:
        return f"{self.action} of #{self.message_id} at {self.edited_at:%Y-%m-%d %H:%M:%S}"


class Attachment(models.Model):
    """An uploaded file, checked and (images) re-encoded; attached to at most one message."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments"
    )
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="attachments"
    )
    file = models.CharField(max_length=255, help_text="Storage name of the file.")
    thumbnail = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(size__gt=0), name="attachment_not_empty")]

    def __str__(self) -> str:
        return self.original_name or str(self.id)


class UserPresence(models.Model):
    """The persisted side of presence: when a user was last seen online (Redis holds who is)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    last_seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.user_id} last seen {self.last_seen_at}"


class DeviceKey(models.Model):
    """A user's device's public keys for end-to-end encrypted conversations (base64 text of the
    raw key bytes; the server never holds a private key). One row per (user, client-chosen
    ``device_id``)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="device_keys"
    )
    device_id = models.CharField(max_length=64)
    identity_key = models.CharField(max_length=64, help_text="X25519 public key, base64.")
    signed_prekey = models.CharField(max_length=64, help_text="X25519 public key, base64.")
    prekey_signature = models.CharField(max_length=100, help_text="64 bytes, base64.")
    signing_key = models.CharField(
        max_length=64, blank=True, help_text="Ed25519 public key the signature verifies under."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "device_id"], name="device_key_once_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.device_id} of {self.user_id}"
