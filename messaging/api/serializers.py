"""Input serializers; output is built by ``messaging.services.*_payload`` (the same shapes the
websocket events carry)."""

from __future__ import annotations

from rest_framework import serializers

from messaging.models import ConversationType, MessageType, Role


class ConversationCreateSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=ConversationType.choices)
    participants = serializers.ListField(
        child=serializers.CharField(max_length=255), required=False, default=list, max_length=500
    )
    title = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    metadata = serializers.DictField(required=False, default=dict)


class ConversationUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=255, required=False, allow_blank=True)
    metadata = serializers.DictField(required=False)


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


class MessageEditSerializer(serializers.Serializer):
    content = serializers.CharField(trim_whitespace=False)


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
