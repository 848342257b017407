"""``/api/v1/webhooks/endpoints``: a service's outbound webhook endpoints, their delivery log and
replays (scope ``webhooks:manage``). Another service's endpoint is a 404. The rules live in
``notifications.services.webhooks``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from communication.api import query
from communication.api.routers import UUID
from communication.auth.permissions import HasScope
from communication.exceptions import APIError, NotFoundError
from notifications.models import WebhookEndpoint, WebhookMessage
from notifications.services import webhooks

MAX_ENDPOINTS_LISTED = 100
MAX_MESSAGES_LISTED = 100


def endpoint_out(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as the API shows it: never its secret."""
    return {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "events": endpoint.events,
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "disabled_at": endpoint.disabled_at,
        "disabled_reason": endpoint.disabled_reason,
        "consecutive_failures": endpoint.consecutive_failures,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    }


def message_out(message: WebhookMessage) -> dict[str, Any]:
    return {
        "id": message.event_id,
        "type": message.event_type,
        "status": message.status,
        "attempts": message.attempts,
        "next_attempt_at": message.next_attempt_at if message.status == "pending" else None,
        "last_status_code": message.last_status_code,
        "created_at": message.created_at,
        "log": [
            {
                "at": a.at,
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error,
            }
            # Newest first; prefetched with the page (no query per message).
            for a in sorted(message.attempts_log.all(), key=lambda a: -a.id)
        ],
    }


def _body(request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise APIError("A JSON object expected.", code="invalid")
    return request.data


class WebhookEndpointViewSet(viewsets.ViewSet):
    """Register, list, change, delete an endpoint; rotate its secret; its delivery log; replay."""

    permission_classes = [HasScope("webhooks:manage")]
    lookup_url_kwarg = "endpoint_id"
    lookup_value_regex = UUID

    def _endpoint(self, request, endpoint_id) -> WebhookEndpoint:
        try:
            return webhooks.endpoint_get(request.user.client_id, endpoint_id)
        except WebhookEndpoint.DoesNotExist:
            raise NotFoundError("No such webhook endpoint.") from None

    @extend_schema(request=None, responses=None, operation_id="webhook_endpoints_list")
    def list(self, request):
        found = WebhookEndpoint.objects.filter(owner=request.user.client_id).order_by(
            "-created_at"
        )[:MAX_ENDPOINTS_LISTED]
        return Response({"results": [endpoint_out(e) for e in found]})

    @extend_schema(request=None, responses=None, operation_id="webhook_endpoints_create")
    def create(self, request):
        body = _body(request)
        endpoint, secret = webhooks.endpoint_create(
            owner=request.user.client_id,
            scopes=request.user.scopes,
            url=body.get("url"),
            events=body.get("events"),
            description=body.get("description", ""),
        )
        return Response({**endpoint_out(endpoint), "secret": secret}, status=201)

    @extend_schema(request=None, responses=None, operation_id="webhook_endpoints_get")
    def retrieve(self, request, endpoint_id):
        return Response(endpoint_out(self._endpoint(request, endpoint_id)))

    @extend_schema(request=None, responses=None, operation_id="webhook_endpoints_update")
    def partial_update(self, request, endpoint_id):
        endpoint = self._endpoint(request, endpoint_id)
        body = _body(request)
        enabled = body.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise APIError("enabled: true or false.", code="invalid")
        webhooks.endpoint_update(
            endpoint,
            url=body.get("url"),
            events=body.get("events"),
            description=body.get("description"),
            enabled=enabled,
        )
        return Response(endpoint_out(endpoint))

    @extend_schema(request=None, responses=None, operation_id="webhook_endpoints_delete")
    def destroy(self, request, endpoint_id):
        webhooks.endpoint_delete(self._endpoint(request, endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=None, operation_id="webhook_endpoints_rotate")
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, endpoint_id):
        endpoint = self._endpoint(request, endpoint_id)
        secret = webhooks.endpoint_rotate_secret(endpoint)
        endpoint.refresh_from_db()
        return Response(
            {
                "id": str(endpoint.id),
                "secret": secret,
                "previous_secret_expires_at": endpoint.previous_secret_expires_at,
            }
        )

    @extend_schema(request=None, responses=None, operation_id="webhook_endpoints_messages")
    @action(detail=True, methods=["get"])
    def messages(self, request, endpoint_id):
        endpoint = self._endpoint(request, endpoint_id)
        found = (
            WebhookMessage.objects.filter(endpoint=endpoint)
            .prefetch_related("attempts_log")
            .order_by("-id")[:MAX_MESSAGES_LISTED]
        )
        return Response({"results": [message_out(m) for m in found]})

    @extend_schema(request=None, responses=None, operation_id="webhook_endpoints_replay")
    @action(
        detail=True,
        methods=["post"],
        url_path=r"messages/(?P<event_id>msg_[0-9a-f]{32})/replay",
    )
    def replay(self, request, endpoint_id, event_id):
        endpoint = self._endpoint(request, endpoint_id)
        try:
            message = webhooks.message_replay(endpoint, event_id)
        except WebhookMessage.DoesNotExist:
            raise NotFoundError("No such message.") from None
        return Response(message_out(message), status=202)

    @extend_schema(request=None, responses=None, operation_id="webhook_endpoints_replay_since")
    @action(detail=True, methods=["post"], url_path="replay")
    def replay_since(self, request, endpoint_id):
        endpoint = self._endpoint(request, endpoint_id)
        value = _body(request).get("since")
        since = query.moment({"since": value}, "since") if isinstance(value, str) else None
        if since is None:
            raise APIError("since: an ISO 8601 date-time.", code="invalid")
        return Response({"replayed": webhooks.messages_replay_since(endpoint, since)}, status=202)
