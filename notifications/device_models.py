"""Push devices: where a user receives push (``notifications.push``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from communication.fields import EncryptedTextField, LookupHashField


class Device(models.Model):
    """A place a user receives push: an FCM registration token (ios, android) or a browser's Web
    Push subscription (endpoint + keys). The same token or endpoint is one device, whoever
    registered it last: found by ``token_hash`` / ``endpoint_hash``, since the token, the
    endpoint and the subscription's keys are encrypted."""

    class Platform(models.TextChoices):
        IOS = "ios", "iOS"
        ANDROID = "android", "Android"
        WEB = "web", "Web"

    FCM_PLATFORMS = ("ios", "android")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices"
    )
    platform = models.CharField(max_length=8, choices=Platform.choices)
    token = EncryptedTextField(blank=True, help_text="FCM registration token")
    token_hash = LookupHashField(of="token", casefold=False)
    endpoint = EncryptedTextField(blank=True, help_text="Web Push endpoint")
    endpoint_hash = LookupHashField(of="endpoint", casefold=False)
    p256dh = EncryptedTextField(blank=True)
    auth = EncryptedTextField(blank=True)
    app_id = models.CharField(max_length=255, blank=True)
    browser = models.CharField(max_length=255, blank=True)
    locale = models.CharField(max_length=35, blank=True)
    active = models.BooleanField(default=True)
    failure_count = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    last_seen_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["token_hash"], condition=~Q(token_hash=""), name="device_token_unique"
            ),
            models.UniqueConstraint(
                fields=["endpoint_hash"],
                condition=~Q(endpoint_hash=""),
                name="device_endpoint_unique",
            ),
            # The encrypted columns cannot be compared in SQL: their hashes say which is set
            # (the subscription's keys are checked by the API).
            models.CheckConstraint(
                condition=(Q(platform="web", token_hash="") & ~Q(endpoint_hash=""))
                | (Q(platform__in=["ios", "android"], endpoint_hash="") & ~Q(token_hash="")),
                name="device_address_matches_platform",
            ),
        ]
        indexes = [
            models.Index(fields=["user"], name="device_user_active", condition=Q(active=True)),
        ]

    def __str__(self) -> str:
        address = self.token or self.endpoint
        return f"{self.platform} {address[:40]}…"
