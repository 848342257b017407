"""Email tracking webhooks: anymail's SendGrid and Mailgun views, subclassed.

anymail parses each vendor's payload into ``AnymailTrackingEvent`` objects and checks its
signature; these subclasses change what anymail leaves open:

- keys come from ``NOTIFICATION_PROVIDERS`` per request (anymail reads ``ANYMAIL`` settings once);
- a missing key refuses everything instead of accepting unsigned posts with a warning;
- every refusal is a 403 (anymail answers 400 through ``SuspiciousOperation``) and nothing is
  written; signed timestamps must be within ``WEBHOOK_TIMESTAMP_TOLERANCE``; a Mailgun token is
  accepted once;
- events go to ``delivery_track`` instead of anymail's ``tracking`` signal.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.signals import AnymailTrackingEvent, EventType, RejectReason
from anymail.webhooks.mailgun import MailgunBaseWebhookView, MailgunTrackingWebhookView
from anymail.webhooks.sendgrid import SendGridBaseWebhookView, SendGridTrackingWebhookView
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from django.views import View

# Importing the email providers also installs the filter for anymail's SendGrid warning.
import notifications.providers._email  # noqa: F401
from notifications.models import ProviderEvent, Suppression
from notifications.tracking import TrackingEvent
from notifications.webhooks.base import ProviderWebhookMixin, WebhookRefusedError

# anymail's normalised event types → ours (event, permanent).
_EVENTS = {
    EventType.QUEUED: ("sent", False),
    EventType.SENT: ("sent", False),
    EventType.DELIVERED: ("delivered", False),
    EventType.DEFERRED: ("deferred", False),
    EventType.BOUNCED: ("bounced", True),
    EventType.REJECTED: ("failed", True),
    EventType.FAILED: ("failed", True),
    EventType.COMPLAINED: ("complained", False),
    EventType.UNSUBSCRIBED: ("unsubscribed", False),
    EventType.OPENED: ("opened", False),
    EventType.CLICKED: ("clicked", False),
}

# Why an ESP dropped a message before sending it → what the address deserves.
_REJECT_SUPPRESS = {
    RejectReason.BOUNCED: Suppression.Reason.HARD_BOUNCE,
    RejectReason.SPAM: Suppression.Reason.COMPLAINT,
    RejectReason.UNSUBSCRIBED: Suppression.Reason.UNSUBSCRIBE,
    RejectReason.INVALID: Suppression.Reason.INVALID,
}


class AnymailWebhookMixin(ProviderWebhookMixin):
    """Glue between anymail's views and :class:`ProviderWebhookMixin`."""

    # Supplied by the anymail view this is mixed into.
    parse_events: Callable[[HttpRequest], list[AnymailTrackingEvent]]

    def __init__(self, **kwargs):
        # Skip anymail's __init__: it reads ANYMAIL settings (and warns) once per view; our keys
        # are read per request in verify().
        View.__init__(self, **kwargs)  # type: ignore[arg-type]  # self is an anymail View

    def post(self, request, *args, **kwargs):
        return self.handle(request)

    def tracking_events(self, request, alias: str) -> list[TrackingEvent]:
        events = []
        for anymail_event in self.parse_events(request):
            event = self.convert(anymail_event, alias)
            if event is not None:
                events.append(event)
        return events

    def convert(self, anymail_event: AnymailTrackingEvent, alias: str) -> TrackingEvent | None:
        mapped = _EVENTS.get(anymail_event.event_type)
        if mapped is None or not anymail_event.message_id:
            return None
        event, permanent = mapped
        suppress = ""
        if anymail_event.event_type == EventType.REJECTED:
            suppress = _REJECT_SUPPRESS.get(anymail_event.reject_reason, "")
        event, permanent = self.adjust(anymail_event, event, permanent)
        occurred_at = anymail_event.timestamp or timezone.now()
        reason = (
            anymail_event.description
            or anymail_event.mta_response
            or anymail_event.reject_reason
            or ""
        )
        data: dict = {"esp_event": anymail_event.event_type}
        if anymail_event.click_url:
            data["url"] = anymail_event.click_url[:2000]
        if event in ("opened", "clicked"):
            # What the machine check of an open or click reads (delivery_track keeps no ip).
            if anymail_event.user_agent:
                data["user_agent"] = str(anymail_event.user_agent)[:300]
            raw = self.raw_event(anymail_event)
            if raw.get("ip"):
                data["ip"] = str(raw["ip"])[:64]
            if self.machine(anymail_event):
                data["machine"] = True
        bounce = ""
        if event == "bounced":
            bounce = "soft" if self.soft_bounce(anymail_event) else "hard"
        return TrackingEvent(
            provider=alias,
            provider_message_id=str(anymail_event.message_id),
            event=event,
            occurred_at=occurred_at,
            permanent=permanent,
            reason=str(reason)[:2000],
            event_id=self.event_id(anymail_event),
            suppress=suppress,
            data=data,
            bounce=bounce,
        )

    def adjust(self, anymail_event, event: str, permanent: bool) -> tuple[str, bool]:
        """Vendor nuance on top of anymail's mapping."""
        return event, permanent

    def raw_event(self, anymail_event) -> dict:
        """The vendor's own record of the event (where it keeps the client's address)."""
        raw = anymail_event.esp_event
        return raw if isinstance(raw, dict) else {}

    def machine(self, anymail_event) -> bool:
        """Whether the vendor itself says a machine opened or clicked."""
        return False

    def soft_bounce(self, anymail_event) -> bool:
        """Whether a bounce refused this message only (the address stays usable)."""
        return False

    def event_id(self, anymail_event) -> str:
        if anymail_event.event_id:
            return str(anymail_event.event_id)
        stamp = anymail_event.timestamp.timestamp() if anymail_event.timestamp else ""
        return f"{anymail_event.message_id}:{anymail_event.event_type}:{stamp}"

    def validation_failed(self, exc: AnymailWebhookValidationFailure) -> WebhookRefusedError:
        return WebhookRefusedError(str(exc)[:300])


class SendGridTrackingView(AnymailWebhookMixin, SendGridTrackingWebhookView):
    """``POST /webhooks/anymail/sendgrid/tracking/``: SendGrid's signed event webhook.

    https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
    — ECDSA (P-256, SHA-256) over ``X-Twilio-Email-Event-Webhook-Timestamp`` + the raw body,
    signature in ``X-Twilio-Email-Event-Webhook-Signature``; the public key (base64 DER, as
    SendGrid shows it) is the alias's ``WEBHOOK_VERIFICATION_KEY``. Duplicates are caught per
    event by ``sg_event_id``.
    """

    vendor = "sendgrid"
    backend = "notifications.providers.sendgrid.SendGridEmailProvider"

    def verify(self, request, alias: str, options: dict) -> None:
        key = (options.get("WEBHOOK_VERIFICATION_KEY") or "").strip()
        if not key:
            raise WebhookRefusedError("no WEBHOOK_VERIFICATION_KEY: unsigned events are refused")
        self.webhook_verification_key = _load_ec_public_key(key)
        try:
            SendGridBaseWebhookView.validate_request(self, request)
        except AnymailWebhookValidationFailure as exc:
            raise self.validation_failed(exc) from exc
        self.check_timestamp(request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp"))

    def soft_bounce(self, anymail_event) -> bool:
        # SendGrid's bounce event has type "bounce" (the address does not exist: hard) or
        # "blocked" (the receiving server refused this message: soft). SendGrid retries neither,
        # so a blocked message has failed (still a bounce), but the address stays usable.
        return self.raw_event(anymail_event).get("type") == "blocked"

    def machine(self, anymail_event) -> bool:
        # https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
        # ("sg_machine_open": an open by Apple Mail Privacy Protection's prefetch).
        return self.raw_event(anymail_event).get("sg_machine_open") in (True, "true")


class MailgunTrackingView(AnymailWebhookMixin, MailgunTrackingWebhookView):
    """``POST /webhooks/anymail/mailgun/tracking/``: Mailgun's signed webhooks.

    https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/#securing-webhooks
    — HMAC-SHA256 of timestamp + token with the alias's ``WEBHOOK_SIGNING_KEY`` (anymail's
    check), the timestamp within tolerance, and each token accepted once: it is recorded in the
    transaction that applies the event, so a token whose processing failed can come again.
    """

    vendor = "mailgun"
    backend = "notifications.providers.mailgun.MailgunEmailProvider"

    def verify(self, request, alias: str, options: dict) -> None:
        key = (options.get("WEBHOOK_SIGNING_KEY") or "").strip()
        if not key:
            raise WebhookRefusedError("no WEBHOOK_SIGNING_KEY: unsigned events are refused")
        self.webhook_signing_key = key.encode("ascii")
        self.basic_auth: list[str] = []
        try:
            MailgunBaseWebhookView.validate_request(self, request)
        except AnymailWebhookValidationFailure as exc:
            raise self.validation_failed(exc) from exc
        token, timestamp = self._signature_fields(request)
        self.check_timestamp(timestamp)
        self._token = token

    def claim_replay(self, request, alias: str) -> None:
        try:
            with transaction.atomic():
                ProviderEvent.objects.create(
                    provider=f"{alias}:token"[:40], event_key=self._token[:255]
                )
        except IntegrityError as exc:
            raise WebhookRefusedError("Mailgun token seen before") from exc

    def raw_event(self, anymail_event) -> dict:
        # JSON webhooks: the event is under "event-data" (legacy form posts carry no address).
        event_data = super().raw_event(anymail_event).get("event-data")
        return event_data if isinstance(event_data, dict) else {}

    def event_id(self, anymail_event) -> str:
        # event-data.id is unique per event (within a day, hence the timestamp), and stays the
        # same if Mailgun re-signs a retry with a new token.
        event_data = (anymail_event.esp_event or {}).get("event-data", {})
        if isinstance(event_data, dict) and event_data.get("id"):
            return f"{event_data['id']}:{event_data.get('timestamp', '')}"
        return super().event_id(anymail_event)

    @staticmethod
    def _signature_fields(request) -> tuple[str, str]:
        if request.content_type == "application/json":
            block = json.loads(request.body.decode("utf-8"))["signature"]
            return str(block["token"]), str(block["timestamp"])
        return request.POST["token"], request.POST["timestamp"]


def _load_ec_public_key(key: str):
    """SendGrid's verification key: base64 DER (as its console shows it) or a PEM block."""
    try:
        if key.startswith("-----BEGIN"):
            public_key = serialization.load_pem_public_key(key.encode("ascii"))
        else:
            public_key = serialization.load_der_public_key(base64.b64decode(key))
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise WebhookRefusedError("WEBHOOK_VERIFICATION_KEY is not a public key") from exc
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise WebhookRefusedError("WEBHOOK_VERIFICATION_KEY is not an ECDSA key")
    return public_key
