"""What staff do from the console and callers cannot: send a failed delivery again as a new
request, and send a test (typed content, or a template version rendered with its examples).

Both go through ``notification_send``: the rules of any send (suppression, consent, preferences,
quiet hours) apply to them as they do to a caller's request.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from django.db import transaction

from analytics import events
from communication.audit import audit_record
from communication.exceptions import ConflictError, NotFoundError
from notifications.models import Delivery
from notifications.services.delivery_events import delivery_event
from notifications.services.send import notification_send
from templates_app import selectors as template_selectors
from templates_app import services as template_services

# A delivery that will not go out on its own any more; a bounce after "sent" ends here too.
RESENDABLE = ("failed",)


@transaction.atomic
def delivery_resend(*, delivery_id: uuid.UUID | str, actor: str) -> Delivery:
    """Sends a failed delivery again, as a new request made by ``actor``: the original's
    recipient (as its caller named it), channel, category, priority, template or content, data
    and locale, now. The request's ``resent_from`` is the original; the original gets a
    ``resent`` event naming the new delivery. Returns the new delivery, whose status may be
    ``suppressed`` or ``skipped`` if the rules of a send say so.

    A delivery is resent once (a second click is a ConflictError naming the first resend): to
    try again, resend the resend. Raises NotFoundError, ConflictError (not failed), and what
    ``notification_send`` raises (a template gone since, …).
    """
    original = (
        Delivery.objects.select_for_update(of=("self",))
        .select_related("notification__request")
        .filter(id=delivery_id)
        .first()
    )
    if original is None:
        raise NotFoundError("No such delivery.")
    if original.status not in RESENDABLE:
        raise ConflictError(
            f"Only a failed delivery can be resent; this one is {original.status}.",
            code="not_resendable",
        )
    earlier = (
        Delivery.objects.filter(notification__request__resent_from=original)
        .values_list("id", flat=True)
        .first()
    )
    if earlier is not None:
        raise ConflictError(f"Already resent as delivery {earlier}.", code="already_resent")
    notification = original.notification
    request = notification.request
    outcome = notification_send(
        caller=actor,
        payload={
            "recipients": [dict(notification.recipient)],
            "category": request.category_id,
            "channels": [original.channel],
            "priority": request.priority,
            "template": request.template_key,
            "content": request.content,
            "data": request.data,
            "locale": request.locale,
        },
        resent_from=original,
    )
    new_id = outcome.body["notifications"][0]["deliveries"][0]["id"]
    events.record(**delivery_event(original, "resent", data={"by": actor, "as": new_id}))
    audit_record(
        "delivery.resend", "notifications.delivery", original.pk, changes={"as": str(new_id)}
    )
    return Delivery.objects.select_related("notification").get(id=new_id)


# Test sends are system messages (no consent needed, no open or click tracking), at high
# priority so that quiet hours do not hold them.
TEST_CATEGORY = "system"


def test_send_payload(
    *,
    channel: str,
    to: str,
    content: dict[str, Any] | None = None,
    template_version: uuid.UUID | str | None = None,
) -> dict[str, Any]:
    """The send request of a test message to ``to`` (an email address, an E.164 number, or for
    push and in-app a user id) on ``channel``: ``content`` as typed, or ``template_version`` (any
    status, a draft included) rendered with its variables' examples. The rendered text is sent as
    it is: the live version of the template is neither used nor changed. Like every request, it
    goes through the send API's validator before ``notification_send``. Raises the template
    errors of a render."""
    if template_version is not None:
        content = template_version_test_content(template_version)
    key = {"email": "email", "sms": "phone"}.get(channel, "user_id")
    return {
        "recipients": [{key: to}],
        "category": TEST_CATEGORY,
        "channels": [channel],
        "priority": "high",
        "content": content or {},
        "data": {},
    }


def template_version_test_content(template_version: uuid.UUID | str) -> dict[str, Any]:
    """A template version rendered with its variables' examples, as inline content that the send
    path renders again to the same text (each field is kept literal)."""
    version = template_selectors.version_get(template_version)
    rendered = template_services.template_preview(key=version.template.key, version_id=version.pk)
    fields = ("subject", "html", "text", "title", "body", "image", "deep_link", "action_url")
    content: dict[str, Any] = {f: _literal(rendered[f]) for f in fields if rendered.get(f)}
    if rendered.get("data"):
        content["data"] = {
            k: _literal(v) if isinstance(v, str) else v for k, v in rendered["data"].items()
        }
    return content


# Where a raw block would end early: Jinja's own pattern for the tag.
_ENDRAW = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")


def _literal(text: str) -> str:
    """``text`` as a template that renders to itself (``+`` keeps the sandbox's trim_blocks and
    lstrip_blocks off the text's own whitespace)."""
    if not any(mark in text for mark in ("{{", "{%", "{#")):
        return text
    parts, start = [], 0
    for match in _ENDRAW.finditer(text):
        parts += [_raw(text[start : match.start()]), "{{ " + json.dumps(match.group()) + " }}"]
        start = match.end()
    parts.append(_raw(text[start:]))
    return "".join(parts)


def _raw(text: str) -> str:
    return "{%+ raw %}" + text + "{%+ endraw +%}"
