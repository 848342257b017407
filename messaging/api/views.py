"""Messaging API: thin views over messaging.services and selectors."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from communication.auth.permissions import IsUser
from communication.exceptions import APIError, NotFoundError
from messaging import attachments, conf, selectors, services
from messaging.api import serializers as s
from messaging.models import Attachment


class ForbiddenError(APIError):
    status_code = 403
    default_code = "permission_denied"


def _valid(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def conversation_item(participant) -> dict:
    """One row of the conversation list: the conversation, the caller's unread count and
    settings, and a preview of the last message."""
    conversation = participant.conversation
    members = getattr(conversation, "active_participants", None)
    if members is None:
        members = list(selectors.active_participants(conversation.id))
    body = services.conversation_payload(conversation, members)
    last = conversation.last_message
    body.update(
        {
            "unread": getattr(participant, "unread", 0),
            "role": participant.role,
            "muted": participant.muted,
            "muted_until": participant.muted_until.isoformat() if participant.muted_until else None,
            "read_up_to": participant.last_read_message_id,
            "last_message": None
            if last is None
            else {
                "id": last.id,
                "sender": last.sender.external_id if last.sender_id else None,
                "type": last.type,
                "preview": "" if last.deleted_at else services.message_preview(last),
                "sent_at": last.sent_at.isoformat(),
                "deleted": last.deleted_at is not None,
            },
        }
    )
    return body


class ConversationPagination(CursorPagination):
    ordering = ("-activity", "-id")
    page_size_query_param = "limit"
    max_page_size = 100

    def get_page_size(self, request):
        self.page_size = conf.get("MESSAGING_PAGE_SIZE")
        return super().get_page_size(request)


class ConversationsView(APIView):
    permission_classes = [IsUser]

    @extend_schema(operation_id="conversations_list", responses={200: dict})
    def get(self, request):
        paginator = ConversationPagination()
        page = paginator.paginate_queryset(selectors.conversation_list(user=request.user), request)
        return paginator.get_paginated_response([conversation_item(p) for p in page])

    @extend_schema(
        operation_id="conversations_create",
        request=s.ConversationCreateSerializer,
        responses={201: dict, 200: dict},
    )
    def post(self, request):
        data = _valid(s.ConversationCreateSerializer, request.data)
        conversation, created = services.conversation_create(
            user=request.user,
            type=data["type"],
            participants=data["participants"],
            title=data["title"],
            metadata=data["metadata"],
        )
        participant = selectors.conversation_get(user=request.user, conversation_id=conversation.id)
        return Response(conversation_item(participant), status=201 if created else 200)


class ConversationDetailView(APIView):
    permission_classes = [IsUser]

    @extend_schema(operation_id="conversations_get", responses={200: dict})
    def get(self, request, conversation_id):
        participant = selectors.conversation_get(user=request.user, conversation_id=conversation_id)
        return Response(conversation_item(participant))

    @extend_schema(
        operation_id="conversations_update",
        request=s.ConversationUpdateSerializer,
        responses={200: dict},
    )
    def patch(self, request, conversation_id):
        data = _valid(s.ConversationUpdateSerializer, request.data)
        services.conversation_update(
            user=request.user,
            conversation_id=conversation_id,
            title=data.get("title"),
            metadata=data.get("metadata"),
        )
        participant = selectors.conversation_get(user=request.user, conversation_id=conversation_id)
        return Response(conversation_item(participant))


class MessagesView(APIView):
    permission_classes = [IsUser]

    @extend_schema(
        operation_id="messages_list", parameters=[s.MessageListQuerySerializer], responses=dict
    )
    def get(self, request, conversation_id):
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
        return Response(
            {
                "results": [services.message_payload(m, request.user.pk) for m in rows],
                "has_more": more,
            }
        )

    @extend_schema(
        operation_id="messages_create",
        request=s.MessageCreateSerializer,
        responses={201: dict, 200: dict},
    )
    def post(self, request, conversation_id):
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
        )
        return Response(
            services.message_payload(message, request.user.pk), status=201 if created else 200
        )


class MessageDetailView(APIView):
    permission_classes = [IsUser]

    @extend_schema(operation_id="messages_get", responses=dict)
    def get(self, request, message_id):
        message = selectors.message_get(user=request.user, message_id=message_id)
        return Response(services.message_payload(message, request.user.pk))

    @extend_schema(operation_id="messages_edit", request=s.MessageEditSerializer, responses=dict)
    def put(self, request, message_id):
        data = _valid(s.MessageEditSerializer, request.data)
        message = services.message_edit(
            user=request.user, message_id=message_id, content=data["content"]
        )
        return Response(services.message_payload(message, request.user.pk))

    @extend_schema(operation_id="messages_delete", responses={204: None})
    def delete(self, request, message_id):
        services.message_delete(user=request.user, message_id=message_id)
        return Response(status=204)


class ReadView(APIView):
    permission_classes = [IsUser]

    @extend_schema(operation_id="conversations_read", request=s.ReadSerializer, responses=dict)
    def post(self, request, conversation_id):
        data = _valid(s.ReadSerializer, request.data)
        participant = services.conversation_mark_read(
            user=request.user, conversation_id=conversation_id, message_id=data["message_id"]
        )
        return Response(
            {
                "conversation_id": str(conversation_id),
                "read_up_to": participant.last_read_message_id,
                "delivered_up_to": participant.last_delivered_message_id,
            }
        )


class ParticipantsView(APIView):
    permission_classes = [IsUser]

    @extend_schema(
        operation_id="participants_add", request=s.ParticipantAddSerializer, responses=dict
    )
    def post(self, request, conversation_id):
        data = _valid(s.ParticipantAddSerializer, request.data)
        participant, created = services.participant_add(
            user=request.user,
            conversation_id=conversation_id,
            user_id=data["user_id"],
            role=data["role"],
        )
        participant.refresh_from_db()
        return Response(services.participant_payload(participant), status=201 if created else 200)


class ParticipantDetailView(APIView):
    permission_classes = [IsUser]

    @extend_schema(operation_id="participants_remove", responses={204: None})
    def delete(self, request, conversation_id, user_id):
        services.participant_remove(
            user=request.user, conversation_id=conversation_id, user_id=user_id
        )
        return Response(status=204)


class LeaveView(APIView):
    permission_classes = [IsUser]

    @extend_schema(operation_id="conversations_leave", request=None, responses={204: None})
    def post(self, request, conversation_id):
        services.conversation_leave(user=request.user, conversation_id=conversation_id)
        return Response(status=204)


class MuteView(APIView):
    permission_classes = [IsUser]

    @extend_schema(operation_id="conversations_mute", request=s.MuteSerializer, responses=dict)
    def post(self, request, conversation_id):
        data = _valid(s.MuteSerializer, request.data)
        participant = services.conversation_mute(
            user=request.user,
            conversation_id=conversation_id,
            muted=data["muted"],
            until=data["until"],
        )
        return Response(
            {
                "conversation_id": str(conversation_id),
                "muted": participant.muted,
                "until": participant.muted_until.isoformat() if participant.muted_until else None,
            }
        )


class AttachmentsView(APIView):
    permission_classes = [IsUser]

    @extend_schema(
        operation_id="attachments_upload",
        request={"multipart/form-data": s.AttachmentUploadSerializer},
        responses={201: dict},
    )
    def post(self, request):
        upload = request.FILES.get("file")
        if upload is None:
            raise APIError(
                "Send the file as multipart field 'file'.", fields={"file": ["Required."]}
            )
        limit = conf.get("MESSAGING_ATTACHMENT_MAX_BYTES")
        if upload.size > limit:
            from communication.exceptions import PayloadTooLargeError

            raise PayloadTooLargeError(f"Attachments are limited to {limit} bytes.")
        attachment = services.attachment_upload(
            user=request.user, data=upload.read(), name=upload.name or ""
        )
        return Response(services.attachment_payload(attachment, request.user.pk), status=201)


class AttachmentDetailView(APIView):
    permission_classes = [IsUser]

    @extend_schema(operation_id="attachments_get", responses=dict)
    def get(self, request, attachment_id):
        attachment = Attachment.objects.select_related("message").filter(id=attachment_id).first()
        if attachment is None or not selectors.attachment_visible_to(attachment, request.user.pk):
            raise NotFoundError("Attachment not found.")
        return Response(services.attachment_payload(attachment, request.user.pk))


class AttachmentDownloadView(APIView):
    """The signed link: no token (it works in an ``<img src>``), but the link names the user it
    was made for, and that user must still be able to see the attachment."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(operation_id="attachments_download", responses={200: bytes})
    def get(self, request, attachment_id):
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
