"""One base for every provider webhook: every check runs before anything is parsed or written.

The flow (:meth:`ProviderWebhookMixin.handle`), modelled on anymail's ``AnymailCoreWebhookView``:

1. find the provider alias the callback is for (``?provider=<alias>``, default the vendor's
   name) and its OPTIONS; a provider that is not configured cannot verify anything → 403;
2. the optional IP allow-list;
3. :meth:`verify`: signature and timestamp, per vendor;
4. no NUL character in the body (:meth:`nul_fields`; PostgreSQL cannot store one) → 400;
5. :meth:`tracking_events`: the vendor's payload as :class:`TrackingEvent` objects (unreadable
   after a good signature → 400, which the vendor may retry);
6. in one transaction: :meth:`claim_replay` (Mailgun's tokens) and ``delivery_track`` per event.
   A replay rolls the whole request back.

Every refusal answers 403 with the same body and is logged with its reason; nothing is written.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Mapping

from django.conf import settings
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.module_loading import import_string

from communication.api.input import multi_nul_fields, nul_fields, nul_response
from notifications.providers.base import ProviderNotConfiguredError
from notifications.services import delivery_track
from notifications.tracking import TrackingEvent
from notifications.webhooks import conf

logger = logging.getLogger(__name__)


class WebhookRefusedError(Exception):
    """The request is not provably from the provider (or was seen before): answer 403."""


class ProviderWebhookMixin:
    """Subclasses set ``vendor`` and ``backend`` and implement ``verify`` / ``tracking_events``.

    ``vendor`` names the default alias and the ``<VENDOR>_WEBHOOK_ALLOWED_IPS`` setting;
    ``backend`` is the provider class path an alias must use to be accepted here.
    """

    vendor = ""
    backend = ""

    # ----------------------------------------------------------------------------- the flow

    def handle(self, request) -> HttpResponse:
        try:
            alias = self.provider_alias(request)
            options = self.provider_options(alias)
            self.check_ip(request)
            self.verify(request, alias, options)
        except WebhookRefusedError as exc:
            return self.refuse(request, str(exc))
        nul = self.nul_fields(request)
        if nul:
            logger.warning(
                "provider webhook holds NUL characters",
                extra={"provider": self.vendor, "fields": nul[:20]},
            )
            return nul_response(nul)
        try:
            events = self.tracking_events(request, alias)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            logger.warning(
                "provider webhook unreadable",
                extra={"provider": self.vendor, "error": repr(exc)[:500]},
            )
            return JsonResponse(
                {"code": "validation_error", "detail": "unreadable payload"}, status=400
            )
        try:
            with transaction.atomic():
                self.claim_replay(request, alias)
                for event in events:
                    delivery_track(event)
        except WebhookRefusedError as exc:
            return self.refuse(request, str(exc))
        return HttpResponse(status=200)

    def refuse(self, request, reason: str) -> HttpResponse:
        logger.warning(
            "provider webhook refused",
            extra={
                "provider": self.vendor,
                "reason": reason,
                "ip": self.client_ip(request),
                "path": request.path,
            },
        )
        return JsonResponse({"code": "permission_denied", "detail": "webhook refused"}, status=403)

    # ------------------------------------------------------------------------------- hooks

    def verify(self, request, alias: str, options: dict) -> None:
        """Checks signature and timestamp. Raises WebhookRefusedError. Every vendor overrides."""
        raise NotImplementedError

    def tracking_events(self, request, alias: str) -> list[TrackingEvent]:
        """The vendor's payload, normalised. Raises KeyError/ValueError on a malformed one."""
        raise NotImplementedError

    def claim_replay(self, request, alias: str) -> None:
        """Records what makes this request unique, inside the transaction that applies it.

        Raises WebhookRefusedError for one seen before. Overridden where the vendor signs a
        nonce (Mailgun); elsewhere duplicates are caught per event by ``delivery_track``.
        """

    # ----------------------------------------------------------------------------- helpers

    def nul_fields(self, request) -> list[str]:
        """The body's fields holding a NUL, which PostgreSQL cannot store (the query string is
        checked for every view by ``NulRefusalMiddleware``). A JSON body is read whole here; one
        that is not JSON is left to :meth:`tracking_events` to refuse."""
        if request.content_type == "application/json":
            try:
                return nul_fields(json.loads(request.body))
            except ValueError:
                return []
        return multi_nul_fields([*request.POST.lists(), *request.FILES.lists()])

    def provider_alias(self, request) -> str:
        return request.GET.get("provider") or self.vendor

    def provider_options(self, alias: str) -> dict:
        config = settings.NOTIFICATION_PROVIDERS.get(alias)
        if not config or config.get("BACKEND") != self.backend:
            raise WebhookRefusedError(f"no {self.vendor} provider named {alias!r}")
        return dict(config.get("OPTIONS") or {})

    def provider(self, alias: str):
        """The configured provider instance (its credentials are checked on construction)."""
        config = settings.NOTIFICATION_PROVIDERS[alias]
        try:
            return import_string(config["BACKEND"])(alias, dict(config.get("OPTIONS") or {}))
        except ProviderNotConfiguredError as exc:
            raise WebhookRefusedError(f"{alias} is not configured: {exc}") from exc

    def client_ip(self, request) -> str:
        hops = int(conf.get("WEBHOOK_TRUSTED_PROXY_COUNT") or 0)
        if hops > 0:
            forwarded = [
                a.strip()
                for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
                if a.strip()
            ]
            # Each trusted proxy appends the address it saw: the caller is hops from the end.
            if len(forwarded) >= hops:
                return forwarded[-hops]
        return request.META.get("REMOTE_ADDR", "")

    def check_ip(self, request) -> None:
        allowed = conf.get(f"{self.vendor.upper()}_WEBHOOK_ALLOWED_IPS") or []
        if not allowed:
            return
        ip = self.client_ip(request)
        try:
            address = ipaddress.ip_address(ip)
        except ValueError as exc:
            raise WebhookRefusedError(f"unreadable client address {ip!r}") from exc
        for entry in allowed:
            try:
                if address in ipaddress.ip_network(entry.strip(), strict=False):
                    return
            except ValueError:
                logger.error(
                    "bad entry in the webhook IP allow-list",
                    extra={"provider": self.vendor, "entry": entry},
                )
        raise WebhookRefusedError(f"address {ip} is not on the allow-list")

    def check_timestamp(self, value) -> None:
        """Refuses a signed timestamp (Unix seconds) outside WEBHOOK_TIMESTAMP_TOLERANCE of now."""
        try:
            timestamp = float(value)
        except (TypeError, ValueError) as exc:
            raise WebhookRefusedError(f"unreadable timestamp {value!r}"[:200]) from exc
        tolerance = float(conf.get("WEBHOOK_TIMESTAMP_TOLERANCE"))
        if abs(time.time() - timestamp) > tolerance:
            raise WebhookRefusedError(f"timestamp {timestamp:.0f} outside {tolerance:.0f}s of now")

    def status_events(
        self,
        alias: str,
        message_id: str,
        status: str,
        statuses: Mapping[str, tuple[str, bool]],
        *,
        reason: str,
        data: dict,
        suppress_on_failure: str = "",
    ) -> list[TrackingEvent]:
        """The event a vendor's delivery status stands for, through ``statuses`` (status →
        (event, permanent)); none for a status that tells the delivery nothing new.

        ``suppress_on_failure`` is the Suppression reason recorded if the event is ``failed``.
        """
        mapped = statuses.get(status)
        if mapped is None:
            return []
        event, permanent = mapped
        return [
            TrackingEvent(
                provider=alias,
                provider_message_id=message_id,
                event=event,
                occurred_at=timezone.now(),
                permanent=permanent,
                reason=reason,
                event_id=f"{message_id}:{status}",
                suppress=suppress_on_failure if event == "failed" else "",
                data=data,
            )
        ]

    def public_url(self, request) -> str:
        """The URL as the caller used it, in front of any proxy: PUBLIC_BASE_URL + path."""
        return settings.PUBLIC_BASE_URL.rstrip("/") + request.get_full_path()
