"""What the email providers share: the Django message they send, and the anymail send flow.

Email keeps django-anymail as its transport (DESIGN.md): a provider builds an
``EmailMultiAlternatives``, hands it to the vendor's anymail backend, and maps what anymail raises
to our error classes in :meth:`AnymailEmailProvider.error_for`, which each vendor module overrides
with its own documentation at hand.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from typing import Any

from anymail.exceptions import (
    AnymailAPIError,
    AnymailConfigurationError,
    AnymailError,
    AnymailInvalidAddress,
    AnymailNotSupportedWarning,
    AnymailRecipientsRefused,
)
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend

from notifications.providers import _merge
from notifications.providers._http import retry_after
from notifications.providers.base import (
    AmbiguousProviderError,
    Message,
    PermanentProviderError,
    Provider,
    ProviderError,
    RateLimitedError,
    SendResult,
    TransientProviderError,
)

# anymail 15 warns on every SendGrid backend and webhook it builds: we know, and chose it anyway.
warnings.filterwarnings("ignore", message=r".*SendGrid.*", category=AnymailNotSupportedWarning)

DEFAULT_TIMEOUT = 15.0


def email_message(
    message: Message,
    *,
    connection: BaseEmailBackend | None = None,
    email_class: type[EmailMultiAlternatives] = EmailMultiAlternatives,
) -> EmailMultiAlternatives:
    """The Django message for ``message``: text and HTML parts, our headers, anymail's extras."""
    body = message.text
    email = email_class(
        subject=message.subject,
        body=body or message.html,
        from_email=message.from_email or settings.DEFAULT_FROM_EMAIL,
        to=[message.to],
        headers=dict(message.headers),
        connection=connection,
    )
    if body and message.html:
        email.attach_alternative(message.html, "text/html")
    elif message.html:
        email.content_subtype = "html"
    # anymail's extras; Django's SMTP backend ignores them (the stubs know only Django's fields).
    metadata = {"delivery_id": str(message.delivery_id)} if message.delivery_id else {}
    tags = [*message.tags] or ([message.category] if message.category else [])
    email.metadata = metadata  # type: ignore[attr-defined]
    email.tags = tags  # type: ignore[attr-defined]
    return email


class AnymailEmailProvider(Provider):
    """An ESP reached through one of anymail's backends.

    Subclasses set ``backend_class`` and ``docs_url``, and extend :meth:`backend_options` (the
    anymail keyword arguments built from our OPTIONS) where their backend takes more. anymail's
    backends are not shared between threads: each thread keeps one, with its HTTP session open
    between sends.
    """

    channel = "email"
    # Every ESP we use answers before it queues; a repeated call sends a second copy at worst.
    idempotent = False
    backend_class: type
    docs_url = ""
    required_options = ("API_KEY",)
    # The vendor's cap on one recipient's substitutions, in bytes (0: none).
    substitutions_max_bytes = 0

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        super().__init__(alias, options)
        self._local = threading.local()

    def backend_options(self) -> dict[str, Any]:
        """The keyword arguments for ``backend_class``: the API key, and the API URL when set.

        Vendors whose backend takes more (Mailgun's sender domain) extend it.
        """
        options: dict[str, Any] = {"api_key": self.options["API_KEY"]}
        if self.options.get("API_URL"):
            options["api_url"] = self.options["API_URL"]
        return options

    def _backend(self) -> Any:
        backend = getattr(self._local, "backend", None)
        if backend is None:
            backend = self.backend_class(
                fail_silently=False,
                timeout=float(self.options.get("TIMEOUT") or DEFAULT_TIMEOUT),
                **self.backend_options(),
            )
            backend.open()
            session = getattr(backend, "session", None)
            if session is not None and session.trust_env:
                # requests reads the proxy and CA-bundle variables from the environment on every
                # call (12 % of a worker's time per email): read them once, for this session.
                url = getattr(backend, "api_url", "") or "https://localhost/"
                found = session.merge_environment_settings(url, {}, None, None, None)
                session.proxies.update(found["proxies"])
                session.verify = found["verify"]
                session.trust_env = False
            self._local.backend = backend
        return backend

    def send(self, message: Message) -> SendResult:
        email = email_message(message)
        try:
            self._backend().send_messages([email])
        except AnymailError as exc:
            raise self.error_for(exc) from exc
        status = email.anymail_status  # type: ignore[attr-defined]  # set by anymail's backend
        message_id = status.message_id
        if isinstance(message_id, set):  # one recipient, so one id; a set only if anymail changes
            message_id = next(iter(message_id), None)
        if not message_id:
            raise AmbiguousProviderError(
                f"{self.alias} accepted the message without an id", code="malformed"
            )
        return SendResult(
            provider_message_id=str(message_id),
            raw={"status": sorted(status.status or [])},
        )

    def send_batch(self, messages: list[Message]) -> list[SendResult | None]:
        """One anymail batch send (``merge_data``, ``merge_metadata``, ``merge_headers``: one
        message per ``to`` address) of the messages that fit one tagged copy
        (``notifications.providers._merge``); each recipient carries its substitutions, its
        delivery id as metadata (webhooks find the delivery by it and by the message id) and its
        own headers (List-Unsubscribe). A message that does not fit, or whose address is already
        in the call, is answered None (sent alone). Vendors whose substitutions anymail passes
        through as they are (SendGrid's legacy ``substitutions``) set ``batch_size``.
        """
        answers: list[SendResult | None] = [None] * len(messages)
        if len(messages) < 2:
            return answers
        merged = _merge.merge(messages, max_bytes=self.substitutions_max_bytes)
        carried: dict[str, int] = {}
        for n, (message, values) in enumerate(zip(messages, merged.substitutions, strict=True)):
            if values is not None and message.to.lower() not in carried:
                carried[message.to.lower()] = n
        if len(carried) < 2:
            return answers
        reference = messages[next(iter(carried.values()))]
        email = email_message(
            dataclasses.replace(
                reference,
                to="",
                headers={},
                delivery_id="",
                subject=merged.template["subject"],
                text=merged.template["text"],
                html=merged.template["html"],
            )
        )
        batch = [messages[n] for n in carried.values()]
        email.to = [m.to for m in batch]
        email.merge_data = {  # type: ignore[attr-defined]  # anymail's extras
            m.to: merged.substitutions[n] for n, m in zip(carried.values(), batch, strict=True)
        }
        email.merge_metadata = {  # type: ignore[attr-defined]
            m.to: {"delivery_id": m.delivery_id} for m in batch
        }
        email.merge_headers = {m.to: dict(m.headers) for m in batch}  # type: ignore[attr-defined]
        try:
            self._backend().send_messages([email])
        except AnymailError as exc:
            raise self.error_for(exc) from exc
        status = email.anymail_status  # type: ignore[attr-defined]  # set by anymail's backend
        found = {address.lower(): s for address, s in (status.recipients or {}).items()}
        for key, n in carried.items():
            recipient = found.get(key)
            message_id = recipient.message_id if recipient is not None else None
            if recipient is None or not message_id:
                raise AmbiguousProviderError(
                    f"{self.alias} accepted the batch without an id for each recipient",
                    code="malformed",
                )
            answers[n] = SendResult(
                provider_message_id=str(message_id), raw={"status": [recipient.status]}
            )
        return answers

    def error_for(self, exc: AnymailError) -> ProviderError:
        """Maps what anymail raised to a ProviderError; vendor modules override and call this."""
        if isinstance(exc, AnymailRecipientsRefused):
            # The code doubles as the suppression reason the pipeline records.
            return PermanentProviderError(str(exc), code="hard_bounce", suppress=True)
        if isinstance(exc, AnymailInvalidAddress):
            return PermanentProviderError(str(exc), code="invalid_address")
        if isinstance(exc, AnymailConfigurationError):
            return TransientProviderError(str(exc), code="configuration")
        if not isinstance(exc, AnymailAPIError):
            # The message could not be built (unsupported feature, serialisation): no provider
            # will take it as it is.
            return PermanentProviderError(str(exc), code="invalid_message")
        status = exc.status_code
        response = getattr(exc, "response", None)
        headers = response.headers if response is not None else {}
        text = _short(exc)
        if status is None:
            # Timeout or connection error: anymail re-raises requests' error as its own. Email is
            # safe to try again (the worst case is a second copy, which RESEND_AMBIGUOUS allows).
            return TransientProviderError(text, code="network")
        if 200 <= status < 300:
            # The ESP accepted something and answered in a way we cannot read.
            return AmbiguousProviderError(text, code="malformed", status_code=status)
        if status == 429:
            return RateLimitedError(
                text, code="rate_limited", status_code=status, retry_after=retry_after(headers)
            )
        if status in (401, 403):
            # Our credentials, not this message: let the next provider of the channel take over.
            return TransientProviderError(text, code="auth", status_code=status)
        if status == 408 or status >= 500:
            return TransientProviderError(text, code="provider_error", status_code=status)
        return PermanentProviderError(text, code="rejected", status_code=status)


def _short(exc: Exception, limit: int = 1000) -> str:
    return str(exc).strip()[:limit]
