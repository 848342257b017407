"""Notifications API: thin viewsets over notifications.services and selectors."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from communication.api import query
from communication.api.routers import UUID
from communication.auth.permissions import HasScope, IsUser
from communication.exceptions import PayloadTooLargeError
from notifications import selectors, services
from notifications.api import serializers as s
from notifications.models import Channel

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Replays within 24 h return the first answer (with Idempotent-Replay: true).",
)

# The send API's admission control (notifications.services.admission).
OVERLOADED = OpenApiResponse(
    description="``overloaded``: too many deliveries of this priority are waiting; retry after "
    "``Retry-After`` seconds (also ``retry_after`` in the body). Nothing was stored."
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


class SendViewSet(viewsets.ViewSet):
    """``POST /notifications``: one send request."""

    permission_classes = [HasScope("notifications:send")]
    serializer_class = s.SendSerializer
    rate_limit_group = "send"

    @extend_schema(
        request=s.SendSerializer,
        responses={202: s.RequestOutSerializer, 503: OVERLOADED},
        parameters=[IDEMPOTENCY_HEADER],
        operation_id="notifications_send",
    )
    def create(self, request):
        data = request.data
        recipients = data.get("recipients") if isinstance(data, dict) else None
        s.check_broadcast_scope(request.user, recipients)
        if isinstance(recipients, list) and len(recipients) > settings.NOTIFICATIONS_MAX_RECIPIENTS:
            raise PayloadTooLargeError(
                f"At most {settings.NOTIFICATIONS_MAX_RECIPIENTS} recipients per request."
            )
        payload = self.serializer_class.validated(data)
        services.send_admit(priority=payload["priority"], scheduled_at=payload.get("scheduled_at"))
        outcome = services.notification_send(
            caller=request.user.client_id,
            payload=payload,
            idempotency_key=request.headers.get("Idempotency-Key", "")[:255],
        )
        return _outcome_response(outcome)


class ScheduleViewSet(SendViewSet):
    """``POST /notifications/schedule``: a send for later."""

    serializer_class = s.ScheduleSerializer

    @extend_schema(
        request=s.ScheduleSerializer,
        responses={202: s.RequestOutSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        operation_id="notifications_schedule",
    )
    def create(self, request):
        return super().create(request)


class NewestFirst(query.StrictCursorPagination):
    """Cursor pagination, newest first, ``?limit=`` up to 200: every list of this app."""

    page_size = 50
    ordering = ("-created_at", "-id")
    max_page_size = 200
    page_size_query_param = "limit"


class InboxPages(NewestFirst):
    """The inbox's pages: newest arrival first (a scheduled item arrives when delivered)."""

    ordering = selectors.INBOX_ORDER


class _Paged(viewsets.GenericViewSet):
    """A viewset whose lists are pages of ``NewestFirst``."""

    pagination_class = NewestFirst

    def _page(self, queryset, serializer_class) -> Response:
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializer_class(page, many=True).data)


class RequestViewSet(_Paged):
    """A caller's send requests: list, status, cancel, reschedule."""

    permission_classes = [HasScope("notifications:send")]
    lookup_url_kwarg = "request_id"
    lookup_value_regex = UUID

    @extend_schema(
        responses=s.RequestSummarySerializer(many=True),
        parameters=[
            OpenApiParameter("category", str),
            OpenApiParameter("since", OpenApiTypes.DATETIME),
            OpenApiParameter("cancelled", bool),
        ],
        operation_id="notifications_requests_list",
    )
    def list(self, request):
        params = request.query_params
        qs = selectors.request_list(
            caller=request.user.client_id,
            category=params.get("category"),
            since=query.moment(params, "since"),
            cancelled=query.flag(params, "cancelled"),
        )
        return self._page(qs, s.RequestSummarySerializer)

    @extend_schema(responses=s.RequestOutSerializer, operation_id="notifications_requests_get")
    def retrieve(self, request, request_id):
        req = services.request_get(caller=request.user.client_id, request_id=request_id)
        return Response(s.RequestOutSerializer(services.request_status(req)).data)

    @extend_schema(
        request=None,
        responses={200: s.RequestOutSerializer},
        operation_id="notifications_requests_cancel",
    )
    def destroy(self, request, request_id):
        req = services.request_cancel(caller=request.user.client_id, request_id=request_id)
        return Response(s.RequestOutSerializer(services.request_status(req)).data)

    @extend_schema(
        request=s.RescheduleSerializer,
        responses=s.RequestOutSerializer,
        operation_id="notifications_requests_reschedule",
    )
    def partial_update(self, request, request_id):
        serializer = s.RescheduleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        req = services.request_reschedule(
            caller=request.user.client_id,
            request_id=request_id,
            scheduled_at=serializer.validated_data["scheduled_at"],
        )
        return Response(s.RequestOutSerializer(services.request_status(req)).data)


# ------------------------------------------------------------------------------ user inbox


class InboxViewSet(_Paged):
    """The user's notifications: unread, history, one, read and unread marks, dismissal."""

    permission_classes = [IsUser]
    lookup_url_kwarg = "notification_id"
    lookup_value_regex = UUID

    @extend_schema(responses=s.UnreadSerializer, operation_id="notifications_unread")
    @action(detail=False, methods=["get"], pagination_class=None)
    def unread(self, request):
        items = list(selectors.inbox(request.user, unread_only=True)[:50])
        body = {"count": services.unread_count(request.user), "results": items}
        return Response(s.UnreadSerializer(body).data)

    @extend_schema(
        responses=s.InboxItemSerializer(many=True),
        parameters=[OpenApiParameter("category", str), OpenApiParameter("unread", bool)],
        operation_id="notifications_history",
    )
    @action(detail=False, methods=["get"], pagination_class=InboxPages)
    def history(self, request):
        qs = selectors.inbox(
            request.user,
            category=request.query_params.get("category"),
            unread_only=bool(query.flag(request.query_params, "unread")),
        )
        return self._page(qs, s.InboxItemSerializer)

    @extend_schema(
        request=None, responses=s.ReadAllSerializer, operation_id="notifications_read_all"
    )
    @action(detail=False, methods=["post"], url_path="read-all", pagination_class=None)
    def read_all(self, request):
        marked = services.notification_read_all(user=request.user)
        return Response(s.ReadAllSerializer({"marked": marked}).data)

    @extend_schema(responses=s.InboxItemSerializer, operation_id="notifications_get")
    def retrieve(self, request, notification_id):
        notification = selectors.notification_get(request.user, notification_id)
        return Response(s.InboxItemSerializer(notification).data)

    @extend_schema(request=None, responses={204: None}, operation_id="notifications_dismiss")
    def destroy(self, request, notification_id):
        services.notification_dismiss(user=request.user, notification_id=notification_id)
        return Response(status=204)

    def _mark(self, request, notification_id, *, read: bool) -> Response:
        notification = services.notification_mark(
            user=request.user, notification_id=notification_id, read=read
        )
        return Response(s.InboxItemSerializer(notification).data)

    @extend_schema(request=None, responses=s.InboxItemSerializer)
    @action(detail=True, methods=["put", "post"], url_path="read", url_name="mark-read")
    def mark_read(self, request, notification_id):
        return self._mark(request, notification_id, read=True)

    @extend_schema(request=None, responses=s.InboxItemSerializer)
    @action(detail=True, methods=["put", "post"], url_path="unread", url_name="mark-unread")
    def mark_unread(self, request, notification_id):
        return self._mark(request, notification_id, read=False)


class PreferenceViewSet(viewsets.ViewSet):
    """The user's categories, channel preferences, quiet hours and consents."""

    permission_classes = [IsUser]

    @extend_schema(
        responses=s.CategoryPreferenceSerializer(many=True), operation_id="notifications_categories"
    )
    @action(detail=False, methods=["get"])
    def categories(self, request):
        categories = selectors.categories_with_preferences(request.user)
        return Response(s.CategoryPreferenceSerializer(categories, many=True).data)

    def _preferences(self, user) -> Response:
        body = {
            "categories": selectors.categories_with_preferences(user),
            "quiet_hours": getattr(user, "quiet_hours", None),
            "timezone": user.timezone or "UTC",
        }
        return Response(s.PreferencesOutSerializer(body).data)

    @extend_schema(
        responses=s.PreferencesOutSerializer, operation_id="notifications_preferences_get"
    )
    @action(detail=False, methods=["get"])
    def preferences(self, request):
        return self._preferences(request.user)

    @extend_schema(
        request=s.PreferencesSerializer,
        responses=s.PreferencesOutSerializer,
        operation_id="notifications_preferences_set",
    )
    @preferences.mapping.put
    def preferences_set(self, request):
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
        return self._preferences(request.user)

    @extend_schema(
        responses=s.DigestOutSerializer,
        parameters=[OpenApiParameter("limit", int, description="items per channel, at most 100")],
        operation_id="notifications_digest",
    )
    @action(detail=False, methods=["get"])
    def digest(self, request):
        limit = query.integer(request.query_params, "limit", minimum=1, maximum=100) or 20
        body = {"channels": selectors.digest_held(request.user, limit=limit)}
        return Response(s.DigestOutSerializer(body).data)

    @extend_schema(responses=s.ConsentSerializer(many=True), operation_id="notifications_consents")
    @action(detail=False, methods=["get"])
    def consents(self, request):
        consents = selectors.consent_list(request.user)[:200]
        return Response(s.ConsentSerializer(consents, many=True).data)

    @extend_schema(
        request=s.ConsentSerializer,
        responses={201: s.ConsentSerializer},
        operation_id="notifications_consents_record",
    )
    @consents.mapping.post
    def consents_record(self, request):
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


class OutboxViewSet(_Paged):
    """What the development providers sent (staff only)."""

    permission_classes = [IsStaffUser]

    @extend_schema(
        responses=s.OutboxSerializer(many=True),
        parameters=[
            OpenApiParameter("channel", str, enum=Channel.values),
            OpenApiParameter("to", str),
        ],
        operation_id="outbox_list",
    )
    def list(self, request):
        qs = selectors.outbox_list(
            channel=query.choice(request.query_params, "channel", Channel.values),
            to=request.query_params.get("to"),
        )
        return self._page(qs, s.OutboxSerializer)
