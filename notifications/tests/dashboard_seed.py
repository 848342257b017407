"""A morning's worth of activity for the dashboard tests, made through the services.

Email goes to a fake SendGrid (pytest-httpserver) that accepts every address but one, which it
refuses for good; SMS and in-app go to the outbox / the inbox; one email stays queued (never
attempted), one is scheduled half an hour from now; a template version waits for approval.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.utils import timezone
from werkzeug import Response

from communication.models import User
from notifications import services
from templates_app import services as template_services
from templates_app.models import Template, TemplateVersion

SENDGRID = "/sendgrid/v3/mail/send"
BOUNCE = "bounce@example.com"


def fake_sendgrid(settings, httpserver) -> None:
    """SendGrid as the only email provider, refusing ``BOUNCE`` (a 400: permanent)."""

    def answer(request):
        if BOUNCE.encode() in request.data:
            return Response(
                '{"errors": [{"message": "Does not contain a valid address."}]}',
                status=400,
                content_type="application/json",
            )
        return Response("", status=202, headers={"X-Message-Id": uuid.uuid4().hex})

    httpserver.expect_request(SENDGRID, method="POST").respond_with_handler(answer)
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "sendgrid": {
            "BACKEND": "notifications.providers.sendgrid.SendGridEmailProvider",
            "OPTIONS": {"API_KEY": "SG.k", "API_URL": httpserver.url_for("/sendgrid/v3/")},
        },
    }
    settings.EMAIL_PROVIDERS = ["sendgrid"]


def send(channels: list[str], recipients: list[dict], **extra) -> list[str]:
    outcome = services.notification_send(
        caller="billing",
        payload={
            "recipients": recipients,
            "category": "alerts",
            "channels": channels,
            "content": {"subject": "Disk almost full", "title": "Disk", "body": "90 % used."},
            "data": {},
            **extra,
        },
    )
    return [d["id"] for n in outcome.body["notifications"] for d in n["deliveries"]]


@dataclass
class Seeded:
    failed: str
    queued: str
    scheduled: str
    pending: TemplateVersion


def seed() -> Seeded:
    """Needs ``fake_sendgrid`` first."""
    emails = send(["email"], [{"email": f"ops{i}@example.com"} for i in range(3)])
    (failed,) = send(["email"], [{"email": BOUNCE}])
    texts = send(["sms"], [{"phone": "+33612345678"}, {"phone": "+33612345679"}])
    services.deliveries_attempt([*emails, failed, *texts])
    User.objects.get_or_create(username="ada", external_id="ada", defaults={"email": "ada@x.io"})
    send(["in_app"], [{"user_id": "ada"}])
    (queued,) = send(["email"], [{"email": "later@example.com"}])
    (scheduled,) = send(
        ["email"],
        [{"email": "soon@example.com"}],
        scheduled_at=timezone.now() + dt.timedelta(minutes=30),
    )
    template = Template.objects.get(key="welcome-email")
    draft = template_services.version_create(
        template=template,
        actor="staff:grace",
        language="en",
        note="Friendlier subject",
        **{
            field: getattr(template.versions.filter(is_live=True).first(), field)
            for field in ("subject", "html", "text")
        },
    )
    pending = template_services.version_submit(version=draft, actor="staff:grace")
    return Seeded(failed=failed, queued=queued, scheduled=scheduled, pending=pending)
