"""Device registry API (``/api/v1/devices``), the VAPID public key, and the small page that uses
the service worker and the registration script (``static/notifications/push/``)."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from django.conf import settings
from django.template.response import TemplateResponse
from django.views.decorators.cache import cache_control
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, viewsets
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from communication.auth.permissions import IsUser
from communication.exceptions import ServiceUnavailableError
from notifications import push
from notifications.models import Device
from notifications.providers.base import ProviderNotConfiguredError
from notifications.providers.webpush import vapid_public_key

MAX_DEVICES_LISTED = 200
_TOKEN = re.compile(r"^[A-Za-z0-9_:\-.]{8,1024}$")
# The push services of the browsers that exist. Any other endpoint would make this service POST
# wherever a user likes (SSRF); development and tests also take http and any host.
PUSH_SERVICE_HOSTS = (
    "fcm.googleapis.com",
    "android.googleapis.com",
    "updates.push.services.mozilla.com",
    "push.services.mozilla.com",
    "notify.windows.com",
    "push.apple.com",
)


def _b64url_bytes(value: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def _endpoint_allowed(url: str) -> bool:
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    if settings.DEVELOPMENT:
        return parts.scheme in ("http", "https")
    hosts = getattr(settings, "WEBPUSH_ENDPOINT_HOSTS", None) or PUSH_SERVICE_HOSTS
    host = parts.hostname.lower()
    return parts.scheme == "https" and any(host == h or host.endswith("." + h) for h in hosts)


class SubscriptionKeysSerializer(serializers.Serializer):
    p256dh = serializers.CharField(max_length=255)
    auth = serializers.CharField(max_length=64)

    def validate_p256dh(self, value):
        raw = _b64url_bytes(value)
        if raw is None or len(raw) != 65 or raw[0] != 4:
            raise serializers.ValidationError(
                "base64url of the 65-byte uncompressed P-256 point expected."
            )
        return value

    def validate_auth(self, value):
        raw = _b64url_bytes(value)
        if raw is None or len(raw) != 16:
            raise serializers.ValidationError("base64url of the 16-byte auth secret expected.")
        return value


class SubscriptionSerializer(serializers.Serializer):
    """``PushSubscription.toJSON()`` (``expirationTime`` is accepted and ignored)."""

    endpoint = serializers.URLField(max_length=2000)
    keys = SubscriptionKeysSerializer()
    expirationTime = serializers.IntegerField(required=False, allow_null=True)  # noqa: N815

    def validate_endpoint(self, value):
        if not _endpoint_allowed(value):
            raise serializers.ValidationError("Not the endpoint of a known push service.")
        return value


class DeviceInSerializer(serializers.Serializer):
    platform = serializers.ChoiceField(choices=Device.Platform.choices)
    token = serializers.CharField(required=False, max_length=1024)
    subscription = SubscriptionSerializer(required=False)
    app_id = serializers.CharField(required=False, allow_blank=True, max_length=255)
    browser = serializers.CharField(required=False, allow_blank=True, max_length=255)
    locale = serializers.CharField(required=False, allow_blank=True, max_length=35)

    def validate(self, attrs):
        if attrs["platform"] == Device.Platform.WEB:
            if not attrs.get("subscription"):
                raise serializers.ValidationError({"subscription": ["Required for web."]})
            if attrs.get("token"):
                raise serializers.ValidationError({"token": ["Not for web: send subscription."]})
        else:
            if not attrs.get("token"):
                raise serializers.ValidationError({"token": ["Required for ios and android."]})
            if not _TOKEN.match(attrs["token"]):
                raise serializers.ValidationError({"token": ["Not an FCM registration token."]})
            if attrs.get("subscription"):
                raise serializers.ValidationError(
                    {"subscription": ["Only for web: send token for ios and android."]}
                )
        return attrs


class DeviceOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = Device
        fields = (
            "id",
            "platform",
            "token",
            "endpoint",
            "app_id",
            "browser",
            "locale",
            "active",
            "created_at",
            "last_seen_at",
        )
        read_only_fields = fields


# One object holding the list (not a list, as drf-spectacular assumes of a ``list`` action).
@extend_schema_serializer(many=False)
class DeviceListSerializer(serializers.Serializer):
    results = DeviceOutSerializer(many=True)


class VapidPublicKeySerializer(serializers.Serializer):
    public_key = serializers.CharField()


class DeviceViewSet(viewsets.ViewSet):
    """The user's devices: register (or refresh), list, forget."""

    permission_classes = [IsUser]
    lookup_url_kwarg = "device_id"
    lookup_value_regex = "[0-9]{1,18}"

    @extend_schema(
        request=DeviceInSerializer,
        responses={200: DeviceOutSerializer, 201: DeviceOutSerializer},
        operation_id="devices_register",
    )
    def create(self, request):
        serializer = DeviceInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        device, created = push.device_register(
            user=request.user,
            platform=data["platform"],
            token=data.get("token", ""),
            subscription=data.get("subscription"),
            app_id=data.get("app_id", ""),
            browser=data.get("browser", ""),
            locale=data.get("locale", "") or getattr(request.user, "locale", "") or "",
        )
        return Response(DeviceOutSerializer(device).data, status=201 if created else 200)

    @extend_schema(responses=DeviceListSerializer, operation_id="devices_list")
    def list(self, request):
        devices = push.device_list(request.user)[:MAX_DEVICES_LISTED]
        return Response(DeviceListSerializer({"results": devices}).data)

    @extend_schema(responses={204: None}, operation_id="devices_delete")
    def destroy(self, request, device_id):
        push.device_delete(user=request.user, device_id=int(device_id))
        return Response(status=204)


class VapidPublicKeyViewSet(viewsets.ViewSet):
    authentication_classes = []
    permission_classes = [AllowAny]
    single_object = True  # the schema describes one object (communication.api.openapi)

    @extend_schema(responses=VapidPublicKeySerializer, operation_id="push_vapid_public_key")
    def list(self, request):
        try:
            key = vapid_public_key()
        except ProviderNotConfiguredError as exc:
            raise ServiceUnavailableError(
                f"Web Push is not configured: {exc}", code="not_configured"
            ) from exc
        response = Response(VapidPublicKeySerializer({"public_key": key}).data)
        response["Cache-Control"] = "public, max-age=300"
        return response


@cache_control(no_cache=True)
def push_page(request):
    """A small page that registers the service worker and subscribes this browser (the
    reference for a front end, and what the page test drives). It takes a user token from the
    URL fragment (``#token=…``), which never reaches a server log."""
    return TemplateResponse(request, "notifications/push_demo.html", {})
