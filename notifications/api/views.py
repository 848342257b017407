"""Notifications API: thin views over notifications.services and selectors."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers as drf_serializers
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from communication.auth.permissions import HasScope, IsUser
from communication.exceptions import PayloadTooLargeError
from notifications import selectors, services
from notifications.api import serializers as s

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Replays within 24 h return the first answer (with Idempotent-Replay: true).",
)


class IsStaffUser(BasePermission):
    message = "Staff only."

    def has_permission(self, request, view):
        return bool(getattr(request.user, "is_staff", False)) and IsUser().has_permission(
            request, view
        )


def _outcome_response(outcome: services.SendOutcome) -> Response:
    response = Response(outcome.body, status=outcome.status_code)
    if outcome.replay:
        response["Idempotent-Replay"] = "true"
    return response


class SendView(APIView):
    permission_classes = [HasScope("notifications:send")]
    serializer_class = s.SendSerializer

    @extend_schema(
        request=s.SendSerializer,
        responses={202: s.RequestOutSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        operation_id="notifications_send",
    )
    def post(self, request):
        outcome = send(
            self.serializer_class,
            request.user,
            request.data,
            request.headers.get("Idempotency-Key", ""),
        )
        return _outcome_response(outcome)


def send(serializer_class, user, data, idempotency_key: str) -> services.SendOutcome:
    """The send endpoints' work."""
    recipients = data.get("recipients") if isinstance(data, dict) else None
    if isinstance(recipients, list) and len(recipients) > settings.NOTIFICATIONS_MAX_RECIPIENTS:
        raise PayloadTooLargeError(
            f"At most {settings.NOTIFICATIONS_MAX_RECIPIENTS} recipients per request."
        )
    return services.notification_send(
        caller=user.client_id,
        payload=serializer_class.validated(data),
        idempotency_key=idempotency_key[:255],
    )


class ScheduleView(SendView):
    serializer_class = s.ScheduleSerializer

    @extend_schema(
        request=s.ScheduleSerializer,
        responses={202: s.RequestOutSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        operation_id="notifications_schedule",
    )
    def post(self, request):
        return super().post(request)


class NewestFirst(CursorPagination):
    """Cursor pagination, newest first, ``?limit=`` up to 200: every list of this app."""

    page_size = 50
    ordering = ("-created_at", "-id")
    max_page_size = 200
    page_size_query_param = "limit"


def _page(view, request, queryset, serializer_class):
    paginator = NewestFirst()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


def _flag(value: str | None) -> bool | None:
    """A boolean query parameter; None when absent."""
    return None if value is None else value.lower() in ("1", "true", "yes")


class RequestListView(APIView):
    permission_classes = [HasScope("notifications:send")]

    @extend_schema(
        responses=s.RequestSummarySerializer(many=True),
        parameters=[
            OpenApiParameter("category", str),
            OpenApiParameter("since", str),
            OpenApiParameter("cancelled", bool),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int),
        ],
        operation_id="notifications_requests_list",
    )
    def get(self, request):
        cancelled = request.query_params.get("cancelled")
        qs = selectors.request_list(
            caller=request.user.client_id,
            category=request.query_params.get("category"),
            since=request.query_params.get("since"),
            cancelled=_flag(cancelled),
        )
        return _page(self, request, qs, s.RequestSummarySerializer)


class RequestDetailView(APIView):
    permission_classes = [HasScope("notifications:send")]

    @extend_schema(responses=s.RequestOutSerializer, operation_id="notifications_requests_get")
    def get(self, request, request_id):
        req = services.request_get(caller=request.user.client_id, request_id=request_id)
        return Response(services.request_status(req))

    @extend_schema(
        request=None, responses=s.RequestOutSerializer, operation_id="notifications_requests_cancel"
    )
    def delete(self, request, request_id):
        req = services.request_cancel(caller=request.user.client_id, request_id=request_id)
        return Response(services.request_status(req))

    @extend_schema(
        request=s.RescheduleSerializer,
        responses=s.RequestOutSerializer,
        operation_id="notifications_requests_reschedule",
    )
    def patch(self, request, request_id):
        serializer = s.RescheduleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        req = services.request_reschedule(
            caller=request.user.client_id,
            request_id=request_id,
            scheduled_at=serializer.validated_data["scheduled_at"],
        )
        return Response(services.request_status(req))


# ------------------------------------------------------------------------------ user inbox


class UnreadView(APIView):
    permission_classes = [IsUser]

    @extend_schema(responses=s.UnreadSerializer, operation_id="notifications_unread")
    def get(self, request):
        items = list(selectors.inbox(request.user, unread_only=True)[:50])
        return Response(
            {
                "count": services.unread_count(request.user),
                "results": s.InboxItemSerializer(items, many=True).data,
            }
        )


class HistoryView(APIView):
    permission_classes = [IsUser]

    @extend_schema(
        responses=s.InboxItemSerializer(many=True),
        parameters=[
            OpenApiParameter("category", str),
            OpenApiParameter("unread", bool),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int),
        ],
        operation_id="notifications_history",
    )
    def get(self, request):
        qs = selectors.inbox(
            request.user,
            category=request.query_params.get("category"),
            unread_only=bool(_flag(request.query_params.get("unread"))),
        )
        return _page(self, request, qs, s.InboxItemSerializer)


class NotificationDetailView(APIView):
    permission_classes = [IsUser]

    @extend_schema(responses=s.InboxItemSerializer, operation_id="notifications_get")
    def get(self, request, notification_id):
        notification = selectors.notification_get(request.user, notification_id)
        return Response(s.InboxItemSerializer(notification).data)

    @extend_schema(request=None, responses={204: None}, operation_id="notifications_dismiss")
    def delete(self, request, notification_id):
        services.notification_dismiss(user=request.user, notification_id=notification_id)
        return Response(status=204)


class MarkView(APIView):
    permission_classes = [IsUser]
    read = True

    @extend_schema(request=None, responses=s.InboxItemSerializer)
    def put(self, request, notification_id):
        notification = services.notification_mark(
            user=request.user, notification_id=notification_id, read=self.read
        )
        return Response(s.InboxItemSerializer(notification).data)

    post = put


class ReadAllView(APIView):
    permission_classes = [IsUser]

    @extend_schema(
        request=None,
        responses=inline_serializer("ReadAll", {"marked": drf_serializers.IntegerField()}),
        operation_id="notifications_read_all",
    )
    def post(self, request):
        return Response({"marked": services.notification_read_all(user=request.user)})


class CategoriesView(APIView):
    permission_classes = [IsUser]

    @extend_schema(
        responses=s.CategoryPreferenceSerializer(many=True), operation_id="notifications_categories"
    )
    def get(self, request):
        return Response(selectors.categories_with_preferences(request.user))


class PreferencesView(APIView):
    permission_classes = [IsUser]

    def _body(self, user):
        quiet = getattr(user, "quiet_hours", None)
        return {
            "categories": selectors.categories_with_preferences(user),
            "quiet_hours": {"start": quiet.start, "end": quiet.end, "enabled": quiet.enabled}
            if quiet
            else None,
            "timezone": user.timezone or "UTC",
        }

    @extend_schema(
        responses=inline_serializer(
            "Preferences",
            {
                "categories": s.CategoryPreferenceSerializer(many=True),
                "quiet_hours": s.QuietHoursSerializer(allow_null=True),
                "timezone": drf_serializers.CharField(),
            },
        ),
        operation_id="notifications_preferences_get",
    )
    def get(self, request):
        return Response(self._body(request.user))

    @extend_schema(
        request=s.PreferencesSerializer,
        responses=inline_serializer(
            "PreferencesOut",
            {
                "categories": s.CategoryPreferenceSerializer(many=True),
                "quiet_hours": s.QuietHoursSerializer(allow_null=True),
                "timezone": drf_serializers.CharField(),
            },
        ),
        operation_id="notifications_preferences_set",
    )
    def put(self, request):
        serializer = s.PreferencesSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        services.preferences_set(user=request.user, changes=data["preferences"])
        if "quiet_hours" in request.data:
            quiet = data.get("quiet_hours") or {}
            services.quiet_hours_set(
                user=request.user,
                start=quiet.get("start"),
                end=quiet.get("end"),
                enabled=quiet.get("enabled", True),
            )
        request.user.refresh_from_db()
        return Response(self._body(request.user))


class ConsentsView(APIView):
    permission_classes = [IsUser]

    @extend_schema(responses=s.ConsentSerializer(many=True), operation_id="notifications_consents")
    def get(self, request):
        return Response(
            s.ConsentSerializer(selectors.consent_list(request.user)[:200], many=True).data
        )

    @extend_schema(
        request=s.ConsentSerializer,
        responses={201: s.ConsentSerializer},
        operation_id="notifications_consents_record",
    )
    def post(self, request):
        serializer = s.ConsentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        evidence = {**data["evidence"], "user_agent": request.headers.get("User-Agent", "")[:300]}
        consent = services.consent_record(
            user=request.user,
            granted=data["granted"],
            source=data["source"],
            channel=data["channel"],
            category=data.get("category_id"),
            evidence=evidence,
        )
        return Response(s.ConsentSerializer(consent).data, status=201)


class OutboxView(APIView):
    permission_classes = [IsStaffUser]

    @extend_schema(
        responses=s.OutboxSerializer(many=True),
        parameters=[OpenApiParameter("channel", str), OpenApiParameter("to", str)],
        operation_id="outbox_list",
    )
    def get(self, request):
        qs = selectors.outbox_list(
            channel=request.query_params.get("channel"), to=request.query_params.get("to")
        )
        return _page(self, request, qs, s.OutboxSerializer)
