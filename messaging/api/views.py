"""Messaging API: thin viewsets over messaging.services and selectors."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from communication import content_access
from communication.api.routers import UUID
from communication.auth.permissions import IsUser
from communication.exceptions import APIError, NotFoundError, PayloadTooLargeError
from messaging import attachments, conf, selectors, services
from messaging.api import serializers as s
from messaging.models import Attachment


class ForbiddenError(APIError):
    status_code = 403
    default_code = "permission_denied"


def _read_for_user(request, conversation_id, **details) -> None:
    """A service reading a conversation with a token issued to act for its user leaves an
    access entry naming the service; the user reading their own leaves none."""
    service = content_access.acting_service(request.auth)
    if service is not None:
        content_access.access_record(
            content_access.CONVERSATION_READ_BY_SERVICE,
            "messaging.conversation",
            conversation_id,
            details={"on_behalf_of": request.user.external_id, **details},
            actor=service,
        )


def _valid(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ConversationPagination(CursorPagination):
    ordering = ("-activity", "-id")
    page_size_query_param = "limit"
    max_page_size = 100

    def get_page_size(self, request):
        self.page_size = conf.get("MESSAGING_PAGE_SIZE")
        return super().get_page_size(request)


class ConversationViewSet(viewsets.GenericViewSet):
    """The caller's conversations, and what they do in one."""

    permission_classes = [IsUser]
    pagination_class = ConversationPagination
    lookup_url_kwarg = "conversation_id"
    lookup_value_regex = UUID

    def _item(self, request, conversation_id, status: int = 200) -> Response:
        participant = selectors.conversation_get(user=request.user, conversation_id=conversation_id)
        return Response(s.ConversationItemSerializer(participant).data, status=status)

    @extend_schema(
        operation_id="conversations_list", responses=s.ConversationItemSerializer(many=True)
    )
    def list(self, request):
        page = self.paginate_queryset(selectors.conversation_list(user=request.user))
        service = content_access.acting_service(request.auth)
        if service is not None:  # each row shows its last message: one entry for the page
            content_access.access_record(
                content_access.CONVERSATION_READ_BY_SERVICE,
                "communication.user",
                request.user.external_id,
                details={
                    "what": "conversation list",
                    "conversations": [str(p.conversation_id) for p in page or ()],
                },
                actor=service,
            )
        return self.get_paginated_response(s.ConversationItemSerializer(page, many=True).data)

    @extend_schema(
        operation_id="conversations_create",
        request=s.ConversationCreateSerializer,
        responses={201: s.ConversationItemSerializer, 200: s.ConversationItemSerializer},
    )
    def create(self, request):
        data = _valid(s.ConversationCreateSerializer, request.data)
        conversation, created = services.conversation_create(
            user=request.user,
            type=data["type"],
            participants=data["participants"],
            title=data["title"],
            metadata=data["metadata"],
            encrypted=data["encrypted"],
        )
        return self._item(request, conversation.id, status=201 if created else 200)

    @extend_schema(operation_id="conversations_get", responses=s.ConversationItemSerializer)
    def retrieve(self, request, conversation_id):
        response = self._item(request, conversation_id)
        _read_for_user(request, conversation_id, what="conversation")
        return response

    @extend_schema(
        operation_id="conversations_update",
        request=s.ConversationUpdateSerializer,
        responses=s.ConversationItemSerializer,
    )
    def partial_update(self, request, conversation_id):
        data = _valid(s.ConversationUpdateSerializer, request.data)
        services.conversation_update(
            user=request.user,
            conversation_id=conversation_id,
            title=data.get("title"),
            metadata=data.get("metadata"),
        )
        return self._item(request, conversation_id)

    @extend_schema(
        operation_id="messages_list",
        parameters=[s.MessageListQuerySerializer],
        responses=s.MessageListSerializer,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def messages(self, request, conversation_id):
        query = _valid(s.MessageListQuerySerializer, request.query_params)
        selectors.participant_get(user=request.user, conversation_id=conversation_id)
        limit = min(
            query.get("limit") or conf.get("MESSAGING_PAGE_SIZE"),
            conf.get("MESSAGING_MAX_PAGE_SIZE"),
        )
        rows, more = selectors.message_list(
            conversation_id=conversation_id,
            before=query.get("before"),
            after=query.get("after"),
            thread=query.get("thread"),
            limit=limit,
        )
        if rows:
            services.conversation_mark_delivered(
                user=request.user, conversation_id=conversation_id, message_id=rows[-1].id
            )
        body = {
            "results": [services.message_payload(m, request.user.pk) for m in rows],
            "has_more": more,
        }
        _read_for_user(request, conversation_id, what="messages", messages=len(rows))
        return Response(s.MessageListSerializer(body).data)

    @extend_schema(
        operation_id="messages_create",
        request=s.MessageCreateSerializer,
        responses={201: s.MessageOutSerializer, 200: s.MessageOutSerializer},
    )
    @messages.mapping.post
    def message_send(self, request, conversation_id):
        data = _valid(s.MessageCreateSerializer, request.data)
        message, created = services.message_send(
            user=request.user,
            conversation_id=conversation_id,
            content=data["content"],
            client_id=data["client_id"] or "",
            parent_id=data["parent_id"],
            attachment_ids=data["attachments"],
            metadata=data["metadata"],
            type=data["type"],
            encrypted=data["encrypted"],
        )
        payload = services.message_payload(message, request.user.pk)
        return Response(s.MessageOutSerializer(payload).data, status=201 if created else 200)

    @extend_schema(
        operation_id="conversations_read",
        request=s.ReadSerializer,
        responses=s.ReadStateSerializer,
    )
    @action(detail=True, methods=["post"])
    def read(self, request, conversation_id):
        data = _valid(s.ReadSerializer, request.data)
        participant = services.conversation_mark_read(
            user=request.user, conversation_id=conversation_id, message_id=data["message_id"]
        )
        return Response(s.ReadStateSerializer(participant).data)

    @extend_schema(operation_id="conversations_leave", request=None, responses={204: None})
    @action(detail=True, methods=["post"])
    def leave(self, request, conversation_id):
        services.conversation_leave(user=request.user, conversation_id=conversation_id)
        return Response(status=204)

    @extend_schema(
        operation_id="conversations_mute",
        request=s.MuteSerializer,
        responses=s.MuteStateSerializer,
    )
    @action(detail=True, methods=["post"])
    def mute(self, request, conversation_id):
        data = _valid(s.MuteSerializer, request.data)
        participant = services.conversation_mute(
            user=request.user,
            conversation_id=conversation_id,
            muted=data["muted"],
            until=data["until"],
        )
        return Response(s.MuteStateSerializer(participant).data)

    @extend_schema(
        operation_id="participants_add",
        request=s.ParticipantAddSerializer,
        responses={201: s.ParticipantOutSerializer, 200: s.ParticipantOutSerializer},
    )
    @action(detail=True, methods=["post"])
    def participants(self, request, conversation_id):
        data = _valid(s.ParticipantAddSerializer, request.data)
        participant, created = services.participant_add(
            user=request.user,
            conversation_id=conversation_id,
            user_id=data["user_id"],
            role=data["role"],
        )
        participant.refresh_from_db()
        payload = services.participant_payload(participant)
        return Response(s.ParticipantOutSerializer(payload).data, status=201 if created else 200)

    @extend_schema(operation_id="participants_remove", responses={204: None})
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"participants/(?P<user_id>[^/]+)",
        url_name="participant",
    )
    def participant_remove(self, request, conversation_id, user_id):
        services.participant_remove(
            user=request.user, conversation_id=conversation_id, user_id=user_id
        )
        return Response(status=204)


class MessageViewSet(viewsets.ViewSet):
    """One message: read, edit (the sender), delete."""

    permission_classes = [IsUser]
    lookup_url_kwarg = "message_id"
    lookup_value_regex = "[0-9]+"

    def _body(self, request, message) -> Response:
        payload = services.message_payload(message, request.user.pk)
        return Response(s.MessageOutSerializer(payload).data)

    @extend_schema(operation_id="messages_get", responses=s.MessageOutSerializer)
    def retrieve(self, request, message_id):
        message = selectors.message_get(user=request.user, message_id=message_id)
        _read_for_user(request, message.conversation_id, what="message", message=message.id)
        return self._body(request, message)

    @extend_schema(
        operation_id="messages_edit",
        request=s.MessageEditSerializer,
        responses=s.MessageOutSerializer,
    )
    def update(self, request, message_id):
        data = _valid(s.MessageEditSerializer, request.data)
        message = services.message_edit(
            user=request.user,
            message_id=message_id,
            content=data["content"],
            encrypted=data["encrypted"],
        )
        return self._body(request, message)

    @extend_schema(operation_id="messages_delete", responses={204: None})
    def destroy(self, request, message_id):
        services.message_delete(user=request.user, message_id=message_id)
        return Response(status=204)


class DeviceKeyViewSet(viewsets.ViewSet):
    """The caller's devices' public keys for end-to-end encrypted conversations."""

    permission_classes = [IsUser]
    lookup_url_kwarg = "device_id"
    lookup_value_regex = "[^/]+"  # the service says what a device id may be

    @extend_schema(
        operation_id="device_keys_publish",
        request=s.DeviceKeyPublishSerializer,
        responses={201: s.DeviceKeyOutSerializer, 200: s.DeviceKeyOutSerializer},
    )
    def update(self, request, device_id):
        data = _valid(s.DeviceKeyPublishSerializer, request.data)
        row, created = services.device_key_publish(
            user=request.user,
            device_id=device_id,
            identity_key=data["identity_key"],
            signed_prekey=data["signed_prekey"],
            signing_key=data["signing_key"],
        )
        body = s.DeviceKeyOutSerializer(services.device_key_payload(row)).data
        return Response(body, status=201 if created else 200)

    @extend_schema(operation_id="device_keys_delete", responses={204: None})
    def destroy(self, request, device_id):
        services.device_key_delete(user=request.user, device_id=device_id)
        return Response(status=204)


class UserKeysViewSet(viewsets.ViewSet):
    """Another user's devices and public keys: for those who share a conversation with them."""

    permission_classes = [IsUser]
    lookup_url_kwarg = "user_id"
    lookup_value_regex = "[^/]+"

    @extend_schema(operation_id="user_keys_get", responses=s.UserKeysOutSerializer)
    def retrieve(self, request, user_id):
        target, rows = services.device_keys_of(user=request.user, external_id=user_id)
        body = {
            "user_id": target.external_id,
            "devices": [services.device_key_payload(row) for row in rows],
        }
        return Response(s.UserKeysOutSerializer(body).data)


class AttachmentViewSet(viewsets.ViewSet):
    """Upload an attachment, read its signed links, and download it through one."""

    permission_classes = [IsUser]
    rate_limit_group = {"create": "upload"}
    lookup_url_kwarg = "attachment_id"
    lookup_value_regex = UUID

    @extend_schema(
        operation_id="attachments_upload",
        request={"multipart/form-data": s.AttachmentUploadSerializer},
        responses={201: s.AttachmentOutSerializer},
    )
    def create(self, request):
        upload = request.FILES.get("file")
        if upload is None:
            raise APIError(
                "Send the file as multipart field 'file'.", fields={"file": ["Required."]}
            )
        limit = conf.get("MESSAGING_ATTACHMENT_MAX_BYTES")
        if upload.size > limit:
            raise PayloadTooLargeError(f"Attachments are limited to {limit} bytes.")
        attachment = services.attachment_upload(
            user=request.user, data=upload.read(), name=upload.name or ""
        )
        payload = services.attachment_payload(attachment, request.user.pk)
        return Response(s.AttachmentOutSerializer(payload).data, status=201)

    @extend_schema(operation_id="attachments_get", responses=s.AttachmentOutSerializer)
    def retrieve(self, request, attachment_id):
        attachment = Attachment.objects.select_related("message").filter(id=attachment_id).first()
        if attachment is None or not selectors.attachment_visible_to(attachment, request.user.pk):
            raise NotFoundError("Attachment not found.")
        if attachment.message is not None:  # a sent one: its signed links read the file
            _read_for_user(
                request,
                attachment.message.conversation_id,
                what="attachment",
                attachment=str(attachment.id),
            )
        payload = services.attachment_payload(attachment, request.user.pk)
        return Response(s.AttachmentOutSerializer(payload).data)

    @extend_schema(operation_id="attachments_download", responses={200: bytes})
    @action(detail=True, methods=["get"], authentication_classes=[], permission_classes=[AllowAny])
    def download(self, request, attachment_id):
        """The signed link: no token (it works in an ``<img src>``), but the link names the user
        it was made for, and that user must still be able to see the attachment."""
        variant = request.query_params.get("v", "file")
        user_pk = request.query_params.get("u", "")
        try:
            attachments.verify(
                attachment_id,
                user_pk=user_pk,
                expires=request.query_params.get("exp"),
                signature=request.query_params.get("sig", ""),
                variant=variant,
            )
        except attachments.LinkError as exc:
            raise ForbiddenError(exc.detail, code=exc.code) from None
        attachment = Attachment.objects.select_related("message").filter(id=attachment_id).first()
        if attachment is None or not selectors.attachment_visible_to(attachment, user_pk):
            raise ForbiddenError("You no longer have access to this attachment.", code="no_access")
        name = attachment.thumbnail if variant == "thumb" else attachment.file
        if not name:
            raise NotFoundError("No such file.")
        content_type = "image/webp" if variant == "thumb" else attachment.content_type
        response = FileResponse(
            attachments.storage().open(name, "rb"),
            content_type=content_type,
            as_attachment=not content_type.startswith("image/"),
            filename=attachment.original_name or name.rsplit("/", 1)[-1],
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        response["Cache-Control"] = "private, max-age=300"
        return response
