"""Input and output serializers.

A message, an attachment, a participant and a conversation are the shapes the websocket events
carry: ``messaging.services.*_payload`` defines them once, and the output serializers here render
those payloads (and document them for the schema) rather than spelling them out a second time.
"""

from __future__ import annotations

import datetime as dt

from rest_framework import serializers

from messaging import selectors, services
from messaging.models import ConversationType, MessageType, Role


class ConversationCreateSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=ConversationType.choices)
    participants = serializers.ListField(
        child=serializers.CharField(max_length=255), required=False, default=list, max_length=500
    )
    title = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    metadata = serializers.DictField(required=False, default=dict)
    encrypted = serializers.BooleanField(
        required=False,
        default=False,
        help_text="End-to-end encrypted: messages are client-side envelopes. Fixed at creation.",
    )


class ConversationUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=255, required=False, allow_blank=True)
    metadata = serializers.DictField(required=False)

    def validate(self, attrs):
        if "encrypted" in self.initial_data:
            raise serializers.ValidationError(
                {"encrypted": ["Fixed when the conversation is created."]}
            )
        return attrs


class MessageCreateSerializer(serializers.Serializer):
    content = serializers.CharField(
        required=False, allow_blank=True, default="", trim_whitespace=False
    )
    client_id = serializers.CharField(
        max_length=64, required=False, allow_blank=True, allow_null=True, default=""
    )
    parent_id = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)
    attachments = serializers.ListField(
        child=serializers.UUIDField(), required=False, default=list, max_length=10
    )
    type = serializers.ChoiceField(
        choices=[MessageType.TEXT, MessageType.ENCRYPTED], required=False, default=MessageType.TEXT
    )
    metadata = serializers.DictField(required=False, default=dict)
    # Checked by the send (messaging.services.e2e), which the websocket shares.
    encrypted = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The envelope, in an end-to-end encrypted conversation (instead of content).",
    )


class MessageEditSerializer(serializers.Serializer):
    content = serializers.CharField(trim_whitespace=False, required=False, default="")
    encrypted = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="A new envelope, for a message of an end-to-end encrypted conversation.",
    )


class MessageListQuerySerializer(serializers.Serializer):
    before = serializers.IntegerField(required=False, min_value=1)
    after = serializers.IntegerField(required=False, min_value=1)
    thread = serializers.IntegerField(required=False, min_value=1)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200)

    def validate(self, attrs):
        if "before" in attrs and "after" in attrs:
            raise serializers.ValidationError({"after": ["Give before or after, not both."]})
        return attrs


class ReadSerializer(serializers.Serializer):
    message_id = serializers.IntegerField(min_value=1)


class ParticipantAddSerializer(serializers.Serializer):
    user_id = serializers.CharField(max_length=255)
    role = serializers.ChoiceField(
        choices=[Role.MEMBER, Role.ADMIN, Role.AGENT], required=False, default=Role.MEMBER
    )


class MuteSerializer(serializers.Serializer):
    until = serializers.DateTimeField(required=False, allow_null=True, default=None)
    muted = serializers.BooleanField(required=False, default=True)


class AttachmentUploadSerializer(serializers.Serializer):
    file = serializers.FileField()


# ------------------------------------------------------------------------------------ output


def _choices(choices) -> str:
    # Text, not an enum: the input serializers take subsets of these choices under the same
    # field names, and the schema would need a pair of enum names for each.
    return "One of: " + ", ".join(choices.values) + "."


class IsoDateTimeField(serializers.DateTimeField):
    """``datetime.isoformat()`` as the websocket events write it (``+00:00``, not DRF's ``Z``)."""

    def to_representation(self, value):
        return value.isoformat() if isinstance(value, dt.datetime) else value


class AttachmentOutSerializer(serializers.Serializer):
    """Renders ``services.attachment_payload``: links are signed for the viewer."""

    id = serializers.UUIDField()
    content_type = serializers.CharField()
    size = serializers.IntegerField()
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    url = serializers.CharField()
    thumbnail_url = serializers.CharField(allow_null=True)


class WrappedKeySerializer(serializers.Serializer):
    device_id = serializers.CharField()
    wrapped_key = serializers.CharField(help_text="Base64.")
    user_id = serializers.CharField(
        required=False, help_text="The device's user, when the sender named it."
    )


class EnvelopeSerializer(serializers.Serializer):
    """An end-to-end encrypted message as its sender's client made it (base64 fields)."""

    alg = serializers.CharField()
    ciphertext = serializers.CharField()
    nonce = serializers.CharField()
    sender_device = serializers.CharField()
    keys = WrappedKeySerializer(many=True)


class MessageOutSerializer(serializers.Serializer):
    """Renders ``services.message_payload``; a deleted message is a tombstone."""

    id = serializers.IntegerField()
    conversation_id = serializers.UUIDField()
    sender = serializers.CharField(allow_null=True)
    type = serializers.CharField(help_text=_choices(MessageType))
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)
    html = serializers.CharField(allow_blank=True, trim_whitespace=False)
    client_id = serializers.CharField(allow_null=True)
    parent_id = serializers.IntegerField(allow_null=True)
    attachments = AttachmentOutSerializer(many=True)
    metadata = serializers.DictField()
    encrypted = EnvelopeSerializer(allow_null=True)
    sent_at = IsoDateTimeField(allow_null=True)
    edited_at = IsoDateTimeField(allow_null=True)
    deleted_at = IsoDateTimeField(allow_null=True)


class MessageListSerializer(serializers.Serializer):
    results = MessageOutSerializer(many=True)
    has_more = serializers.BooleanField()


class ParticipantOutSerializer(serializers.Serializer):
    """Renders ``services.participant_payload``."""

    user_id = serializers.CharField(allow_null=True)
    name = serializers.CharField(allow_blank=True)
    role = serializers.CharField(help_text=_choices(Role))
    joined_at = IsoDateTimeField(allow_null=True)
    read_up_to = serializers.IntegerField(allow_null=True)
    delivered_up_to = serializers.IntegerField(allow_null=True)


class ConversationOutSerializer(serializers.Serializer):
    """Renders ``services.conversation_payload``."""

    id = serializers.UUIDField()
    type = serializers.CharField(help_text=_choices(ConversationType))
    title = serializers.CharField(allow_blank=True)
    metadata = serializers.DictField()
    archived = serializers.BooleanField()
    encrypted = serializers.BooleanField()
    created_by = serializers.CharField(allow_null=True)
    assigned_agent = serializers.CharField(allow_null=True)
    participants = ParticipantOutSerializer(many=True)
    created_at = IsoDateTimeField(allow_null=True)
    last_activity_at = IsoDateTimeField(allow_null=True)


class LastMessageSerializer(serializers.Serializer):
    """A preview of a conversation's last message, from the ``Message``."""

    id = serializers.IntegerField()
    sender = serializers.CharField(source="sender.external_id", allow_null=True)
    type = serializers.CharField(help_text=_choices(MessageType))
    preview = serializers.SerializerMethodField()
    sent_at = IsoDateTimeField()
    deleted = serializers.SerializerMethodField()

    def get_preview(self, message) -> str:
        return "" if message.deleted_at else services.message_preview(message)

    def get_deleted(self, message) -> bool:
        return message.deleted_at is not None


class ParticipantStateSerializer(serializers.Serializer):
    """The caller's own state in a conversation, from their ``Participant``."""

    unread = serializers.IntegerField(default=0, help_text="Messages after read_up_to.")
    role = serializers.CharField(help_text=_choices(Role))
    muted = serializers.BooleanField()
    muted_until = IsoDateTimeField(allow_null=True)
    read_up_to = serializers.IntegerField(source="last_read_message_id", allow_null=True)
    last_message = LastMessageSerializer(source="conversation.last_message", allow_null=True)


class ConversationItemSerializer(ConversationOutSerializer, ParticipantStateSerializer):
    """A conversation as the caller sees it, from their ``Participant``: the conversation (as
    its events show it) followed by the caller's own state in it."""

    def to_representation(self, participant):
        conversation = participant.conversation
        members = getattr(conversation, "active_participants", None)  # prefetched by the list
        if members is None:
            members = list(selectors.active_participants(conversation.id))
        payload = services.conversation_payload(conversation, members)
        return {
            **ConversationOutSerializer(payload).data,
            **ParticipantStateSerializer(participant).data,
        }


class ReadStateSerializer(serializers.Serializer):
    """Where the caller's read and delivered marks are, from their ``Participant``."""

    conversation_id = serializers.CharField()
    read_up_to = serializers.IntegerField(source="last_read_message_id", allow_null=True)
    delivered_up_to = serializers.IntegerField(source="last_delivered_message_id", allow_null=True)


class MuteStateSerializer(serializers.Serializer):
    """The caller's mute, from their ``Participant``."""

    conversation_id = serializers.CharField()
    muted = serializers.BooleanField()
    until = IsoDateTimeField(source="muted_until", allow_null=True)


# ------------------------------------------------------------------------------- device keys


class SignedPrekeySerializer(serializers.Serializer):
    key = serializers.CharField(help_text="X25519 public key, base64 of 32 bytes.")
    signature = serializers.CharField(help_text="Base64 of 64 bytes.")


class DeviceKeyPublishSerializer(serializers.Serializer):
    """Shapes for the schema; ``services.device_key_publish`` checks sizes and base64."""

    identity_key = serializers.CharField(help_text="X25519 public key, base64 of 32 bytes.")
    signed_prekey = serializers.JSONField(help_text="{key, signature}, base64.")
    signing_key = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Ed25519 public key (base64 of 32 bytes) the prekey's signature verifies under.",
    )


class DeviceKeyOutSerializer(serializers.Serializer):
    device_id = serializers.CharField()
    identity_key = serializers.CharField()
    signed_prekey = SignedPrekeySerializer()
    signing_key = serializers.CharField(allow_null=True)
    updated_at = IsoDateTimeField(allow_null=True)


class UserKeysOutSerializer(serializers.Serializer):
    user_id = serializers.CharField()
    devices = DeviceKeyOutSerializer(many=True)
