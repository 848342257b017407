"""Local fakes of providers' batch calls, shared by the tests and the bench: what the vendor
would send to each recipient of one call, its substitutions applied (so each recipient's text
can be checked against what a call of its own would have carried)."""

from __future__ import annotations

import re
from typing import Any


def _substitute(text: str, values: dict[str, str]) -> str:
    # One pass over every key, as SendGrid applies ``substitutions``.
    if not values or not text:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in sorted(values, key=len, reverse=True)))
    return pattern.sub(lambda m: values[m.group(0)], text)


def sendgrid_messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages one SendGrid v3 ``mail/send`` body stands for: one per personalization, with
    its ``to``, its substitutions applied to subject, text and HTML, and its ``custom_args``
    and ``headers`` over the message's."""
    content = {part["type"]: part["value"] for part in payload.get("content", [])}
    messages = []
    for personalization in payload["personalizations"]:
        values = personalization.get("substitutions") or {}
        messages.append(
            {
                "to": personalization["to"][0]["email"],
                "subject": _substitute(
                    personalization.get("subject", payload.get("subject", "")), values
                ),
                "text": _substitute(content.get("text/plain", ""), values),
                "html": _substitute(content.get("text/html", ""), values),
                "custom_args": {
                    **payload.get("custom_args", {}),
                    **personalization.get("custom_args", {}),
                },
                "headers": {**payload.get("headers", {}), **personalization.get("headers", {})},
            }
        )
    return messages


def sendgrid_in_process(settings, httpserver, **options: Any) -> None:
    """Points email at SendGrid played by ``httpserver`` (``settings``: pytest-django's), for
    tests that deliver in-process: nothing consumes the queues they publish to. ``options`` go
    to the provider's OPTIONS (a webhook verification key …)."""
    settings.CELERY_QUEUE_PREFIX = "void-"
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "sendgrid": {
            "BACKEND": "notifications.providers.sendgrid.SendGridEmailProvider",
            "OPTIONS": {
                "API_KEY": "SG.k",
                "API_URL": httpserver.url_for("/sendgrid/v3/"),
                **options,
            },
        },
    }
    settings.EMAIL_PROVIDERS = ["sendgrid"]
