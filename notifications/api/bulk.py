"""The bulk API: ``POST /notifications/bulk`` and ``GET /notifications/batches/{id}``.

The request's own fields go through a serializer; its recipients (up to ten thousand) are
checked here one by one in plain Python with the single send's rules (``_clean_recipient``):
a serializer per row would cost more than the rest of the request. A bad row is a rejected
row, not a failed request."""

from __future__ import annotations

import json
import re
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from communication.api.routers import UUID
from communication.api.validation import InputSerializer
from communication.auth.permissions import HasScope
from notifications import services
from notifications.api import serializers as s
from notifications.api.views import IDEMPOTENCY_HEADER, OVERLOADED
from notifications.models import Delivery, Priority
from notifications.services import bulk


class BulkRecipientSerializer(s.RecipientSerializer):
    """One recipient of a bulk request (documents the shape; rows are checked by
    :func:`rows_clean`)."""

    data = serializers.DictField(required=False)  # type: ignore[assignment]  # see ContentSerializer


class _Rows(serializers.Field):
    """The recipients as given: a non-empty list, each row checked by :func:`rows_clean`."""

    def to_internal_value(self, data):
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError("A non-empty list of recipients.")
        return data

    def to_representation(self, value):
        return value


class BulkSerializer(InputSerializer):
    recipients = _Rows()
    category = serializers.SlugField(required=False, default="transactional")
    channels = s.ChannelsField(required=False, default="auto")
    template = serializers.SlugField(required=False, max_length=100)
    content = s.ContentSerializer(required=False)
    data = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]  # see ContentSerializer
    locale = serializers.CharField(required=False, allow_blank=True, max_length=35, default="")
    # Bulk traffic goes to the bulk queue unless the caller asks otherwise.
    priority = serializers.ChoiceField(
        choices=Priority.choices, required=False, default=Priority.LOW
    )
    escalation = s.EscalationField(required=False)
    cancellation_key = serializers.CharField(required=False, allow_blank=True, max_length=255)

    def validate(self, attrs):
        if bool(attrs.get("template")) == bool(attrs.get("content")):
            raise serializers.ValidationError(
                {"template": ["Give a template, or inline content, not both."]}
            )
        s.check_escalation(attrs)
        return attrs


class BulkSendSerializer(serializers.Serializer):
    """The body as documented: the recipients with their shape."""

    recipients = BulkRecipientSerializer(many=True)
    category = serializers.SlugField(required=False, default="transactional")
    channels = s.ChannelsField(required=False, default="auto")
    template = serializers.SlugField(required=False, max_length=100)
    content = s.ContentSerializer(required=False)
    data = serializers.DictField(required=False)  # type: ignore[assignment]  # see ContentSerializer
    locale = serializers.CharField(required=False, allow_blank=True, max_length=35)
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)
    escalation = s.EscalationField(required=False)
    cancellation_key = serializers.CharField(required=False, max_length=255)


class RejectedSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    code = serializers.CharField()
    detail = serializers.CharField()


class BulkOutSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    status_url = serializers.CharField()
    accepted = serializers.IntegerField()
    rejected = RejectedSerializer(many=True)


class BatchOutSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    accepted = serializers.IntegerField()
    rejected = RejectedSerializer(many=True)
    by_status = serializers.DictField(
        child=serializers.IntegerField(),
        help_text=f"Deliveries by status, every one: {', '.join(Delivery.Status.values)}.",
    )
    done = serializers.BooleanField(
        help_text="Nothing left to fan out and no delivery scheduled, queued or sending."
    )


def _first_message(detail: Any) -> str:
    while isinstance(detail, dict | list) and detail:
        detail = next(iter(detail.values())) if isinstance(detail, dict) else detail[0]
    return str(detail)


# A strict subset of what Django's EmailValidator accepts (ASCII dot-atom, letter TLD): an
# address matching it is valid as the single send's check would find it, without its cost;
# anything else goes through that check.
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}"
)


def _spec(item: Any) -> dict[str, str]:
    """The recipient's spec as ``_clean_recipient`` answers it (raises its errors)."""
    if type(item) is dict:
        email = item.get("email")
        if (
            type(email) is str
            and len(email) <= 320
            and not item.get("user_id")
            and not item.get("phone")
            and _PLAIN_EMAIL.fullmatch(email)
        ):
            return {"email": email}
    return s._clean_recipient(item)


_BIG = 10**30  # an integer below it has fewer than 32 characters


def _surely_small(data: dict[str, Any], limit: int) -> bool:
    """Whether ``data`` is surely at most ``limit`` bytes as JSON, without encoding it: a flat
    object's bound (a character encodes to at most six bytes, ``\\uXXXX``). Nested or near
    the limit: the caller encodes it (json's ASCII default: as many bytes as characters)."""
    size = 2
    for key, value in data.items():
        kind = type(value)
        if kind is str:
            size += 6 * (len(key) + len(value)) + 6
        elif (
            kind is float or kind is bool or value is None or (kind is int and -_BIG < value < _BIG)
        ):
            size += 6 * len(key) + 40
        else:
            return False
    return size <= limit


def rows_clean(items: list[Any]) -> tuple[list[bulk.Row], list[bulk.Rejected]]:
    """The recipients checked for shape: valid rows, and the rejected ones with their code."""
    valid: list[bulk.Row] = []
    rejected: list[bulk.Rejected] = []
    limit = bulk.ROW_DATA_MAX_BYTES
    for index, item in enumerate(items):
        try:
            spec = _spec(item)
        except ValidationError as exc:
            field = next(iter(exc.detail), "") if isinstance(exc.detail, dict) else ""
            code = {"email": "invalid_email", "phone": "invalid_phone"}.get(
                field, "invalid_recipient"
            )
            rejected.append({"index": index, "code": code, "detail": _first_message(exc.detail)})
            continue
        data = item.get("data")
        if not data:
            if data is None or data == {}:
                valid.append(bulk.Row(index, spec, {}))
                continue
        if type(data) is not dict:
            rejected.append(
                {"index": index, "code": "invalid_data", "detail": "data must be an object."}
            )
            continue
        if not _surely_small(data, limit) and len(json.dumps(data)) > limit:
            rejected.append(
                {
                    "index": index,
                    "code": "data_too_large",
                    "detail": f"data is larger than {limit} bytes as JSON.",
                }
            )
            continue
        valid.append(bulk.Row(index, spec, data))
    return valid, rejected


class BulkViewSet(viewsets.ViewSet):
    """``POST /notifications/bulk``: up to ten thousand recipients (``BULK_MAX_RECIPIENTS``),
    each with its own data."""

    permission_classes = [HasScope("notifications:send")]
    rate_limit_group = "send"

    @extend_schema(
        request=BulkSendSerializer,
        responses={202: BulkOutSerializer, 503: OVERLOADED},
        parameters=[IDEMPOTENCY_HEADER],
        operation_id="notifications_bulk",
    )
    def create(self, request):
        data = request.data
        recipients = data.get("recipients") if isinstance(data, dict) else None
        s.check_broadcast_scope(request.user, recipients)
        if isinstance(recipients, list):
            # Counted before anything is checked row by row.
            bulk.too_many(len(recipients))
        payload = BulkSerializer.validated(data)
        services.send_admit(priority=payload["priority"])
        valid, rejected = rows_clean(payload.pop("recipients"))
        outcome = bulk.bulk_send(
            caller=request.user.client_id,
            payload=payload,
            rows_in=valid,
            rejected=rejected,
            idempotency_key=request.headers.get("Idempotency-Key", "")[:255],
        )
        response = Response(outcome.body, status=outcome.status_code)
        if outcome.replay:
            response["Idempotent-Replay"] = "true"
        return response


class BatchViewSet(viewsets.ViewSet):
    """``GET /notifications/batches/{id}``: a bulk request's progress (the caller's own)."""

    permission_classes = [HasScope("notifications:send")]
    lookup_url_kwarg = "batch_id"
    lookup_value_regex = UUID

    @extend_schema(responses=BatchOutSerializer, operation_id="notifications_batches_get")
    def retrieve(self, request, batch_id):
        return Response(bulk.batch_status(caller=request.user.client_id, batch_id=batch_id))
