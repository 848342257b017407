"""Stopping what has not gone out yet: a caller's cancel by ``cancellation_key``, and the user's
"I opened the push" that stops a notification's escalation."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from communication.api.routers import UUID
from communication.api.validation import InputSerializer
from communication.auth.permissions import HasScope, IsUser
from notifications.services import cancellation


class CancelSerializer(InputSerializer):
    # DRF's CharField refuses NUL characters and blank values.
    cancellation_key = serializers.CharField(max_length=255)


class CancelledSerializer(serializers.Serializer):
    cancelled = serializers.IntegerField(help_text="Deliveries cancelled by this call.")
    already_sent = serializers.ListField(
        child=serializers.UUIDField(),
        help_text="Deliveries already handed to a provider (sending, sent, delivered, "
        f"ambiguous): too late to cancel. At most {cancellation.ALREADY_SENT_LIST_MAX}.",
    )


class PushOpenedSerializer(serializers.Serializer):
    cancelled = serializers.IntegerField(help_text="Escalation steps this open cancelled.")


class CancelViewSet(viewsets.ViewSet):
    """``POST /notifications/cancel``: cancels every delivery of the caller's sends carrying a
    ``cancellation_key``, not yet handed to a provider."""

    permission_classes = [HasScope("notifications:send")]
    rate_limit_group = "send"

    @extend_schema(
        request=CancelSerializer,
        responses=CancelledSerializer,
        operation_id="notifications_cancel",
        description="Scoped to the caller: another service's key cancels nothing. An unknown "
        "key answers 200 with nothing cancelled.",
    )
    @action(detail=False, methods=["post"], url_path="cancel")
    def cancel(self, request):
        body = CancelSerializer.validated(request.data)
        done = cancellation.cancellation_key_cancel(
            caller=request.user.client_id, key=body["cancellation_key"]
        )
        return Response({"cancelled": done.cancelled, "already_sent": done.already_sent})


class PushOpenedViewSet(viewsets.ViewSet):
    """``POST /notifications/{id}/push-opened``: the app tells us its user opened the push
    (its data carries ``notification_id``); the notification's later escalation steps stop."""

    permission_classes = [IsUser]
    lookup_url_kwarg = "notification_id"
    lookup_value_regex = UUID

    @extend_schema(
        request=None, responses=PushOpenedSerializer, operation_id="notifications_push_opened"
    )
    @action(detail=True, methods=["post"], url_path="push-opened")
    def push_opened(self, request, notification_id):
        cancelled = cancellation.notification_push_opened(
            user=request.user, notification_id=notification_id
        )
        return Response({"cancelled": cancelled})
