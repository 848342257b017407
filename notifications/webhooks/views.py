"""SMS provider webhooks: Twilio status callbacks and OVH delivery callbacks.

The email ones (SendGrid, Mailgun) subclass anymail's tracking views: see ``esp.py``.
"""

from __future__ import annotations

from django.utils.crypto import constant_time_compare
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from notifications.models import Suppression
from notifications.tracking import TrackingEvent
from notifications.webhooks import conf
from notifications.webhooks.base import ProviderWebhookMixin, WebhookRefusedError

# https://www.twilio.com/docs/api/errors/21610 — the recipient replied STOP: never again on SMS.
# Invalid or unreachable numbers fail the delivery but are not suppressed: a number can be
# allocated later, and the same rule holds for the errors Twilio answers when sending.
TWILIO_SUPPRESS = {"21610": Suppression.Reason.UNSUBSCRIBE}

# https://www.twilio.com/docs/messaging/guides/track-outbound-message-status — MessageStatus;
# queued/accepted/scheduled/sending say nothing the delivery does not already know.
TWILIO_STATUSES = {
    "sent": ("sent", False),
    "delivered": ("delivered", False),
    "read": ("opened", False),
    "undelivered": ("failed", True),
    "failed": ("failed", True),
    "canceled": ("failed", True),
}


@method_decorator(csrf_exempt, name="dispatch")
class TwilioStatusView(ProviderWebhookMixin, View):
    """``POST /webhooks/twilio/status``: Twilio's message status callbacks.

    Verified with ``X-Twilio-Signature`` over ``PUBLIC_BASE_URL`` + the path and query as called
    (the URL Twilio signed, in front of our proxy) and the POST parameters, with the auth token
    of the alias (``?provider=``, default ``twilio``). Optional ``TWILIO_WEBHOOK_ALLOWED_IPS``.
    Twilio has no timestamp to check; a replayed callback repeats an event already applied,
    which ``delivery_track`` ignores (event id = MessageSid + status).
    """

    vendor = "twilio"
    backend = "notifications.providers.twilio_sms.TwilioSmsProvider"
    http_method_names = ["post"]

    def post(self, request, *args, **kwargs):
        return self.handle(request)

    def verify(self, request, alias: str, options: dict) -> None:
        provider = self.provider(alias)
        signature = request.headers.get("X-Twilio-Signature", "")
        if not provider.verify_callback(self.public_url(request), request.POST, signature):
            raise WebhookRefusedError("bad X-Twilio-Signature")
        account = request.POST.get("AccountSid")
        if account and not constant_time_compare(account, options.get("ACCOUNT_SID", "")):
            raise WebhookRefusedError("callback for another account")

    def tracking_events(self, request, alias: str) -> list[TrackingEvent]:
        sid = request.POST["MessageSid"]
        status = request.POST["MessageStatus"].lower()
        if not sid:
            raise ValueError("empty MessageSid")
        error_code = request.POST.get("ErrorCode", "")
        return self.status_events(
            alias,
            sid,
            status,
            TWILIO_STATUSES,
            reason=f"Twilio error {error_code}" if error_code else status,
            suppress_on_failure=TWILIO_SUPPRESS.get(error_code, ""),
            data={"status": status, "error_code": error_code},
        )


# OVH reports delivery with the DLR values of the Kannel gateway: 1 delivered to the handset,
# 2 not delivered, 4 buffered (still trying), 8 handed to the operator, 16 refused by it.
OVH_DLR = {
    "1": ("delivered", False),
    "2": ("failed", True),
    "4": ("deferred", False),
    "8": ("sent", False),
    "16": ("failed", True),
}


@method_decorator(csrf_exempt, name="dispatch")
class OvhStatusView(ProviderWebhookMixin, View):
    """``GET|POST /webhooks/ovh/status?token=…``: OVH's SMS delivery callbacks.

    OVH signs nothing it sends, so the callback URL we give with each job carries a shared
    secret, ``OVH_WEBHOOK_TOKEN``, compared in constant time: without it configured every call
    is refused. ``OVH_WEBHOOK_ALLOWED_IPS`` (OVH's published ranges) may be added on top. The
    fields read: ``id`` (the SMS id ``POST /sms/{service}/jobs`` answered), ``dlr`` (see
    OVH_DLR), ``description``; in the query (OVH calls with GET) or a form body.
    """

    vendor = "ovh"
    backend = "notifications.providers.ovh_sms.OvhSmsProvider"
    http_method_names = ["get", "post"]

    def get(self, request, *args, **kwargs):
        return self.handle(request)

    def post(self, request, *args, **kwargs):
        return self.handle(request)

    def verify(self, request, alias: str, options: dict) -> None:
        expected = conf.get("OVH_WEBHOOK_TOKEN") or ""
        given = request.GET.get("token", "")
        if not expected:
            raise WebhookRefusedError("OVH_WEBHOOK_TOKEN is not configured")
        if not constant_time_compare(given, expected):
            raise WebhookRefusedError("bad token")

    def tracking_events(self, request, alias: str) -> list[TrackingEvent]:
        params = request.GET.copy()
        params.update(request.POST)
        sms_id = params["id"].strip()
        dlr = params["dlr"].strip()
        if not sms_id:
            raise ValueError("empty id")
        return self.status_events(
            alias,
            sms_id,
            dlr,
            OVH_DLR,
            reason=params.get("description", "")[:500] or f"dlr {dlr}",
            data={"dlr": dlr},
        )
