"""SMTP (email, fallback and development) through Django's SMTP backend, from ``SMTP_URL``.

``smtp://user:pass@host:port`` (plain, or ``?starttls=1`` to upgrade with STARTTLS),
``smtps://user:pass@host:port`` (implicit TLS, port 465 by default); ``?timeout=`` in seconds.
User and password are percent-decoded. SMTP has no delivery webhooks: the message id we return
(the Message-ID header we set) is for the log only.

Each thread keeps one connection open between messages, tasks and batches (a worker process is
one connection; ``WORKER_BULK_CONCURRENCY`` processes are as many): opening one costs the
greeting, EHLO and a login, more than a message. A connection idle for ``IDLE_CHECK_SECONDS``
is probed with NOOP before use (relays drop idle clients), and one that failed is closed, so
the next message opens a fresh one.
"""

from __future__ import annotations

import smtplib
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend
from django.core.mail.message import make_msgid

from notifications.providers._email import DEFAULT_TIMEOUT, email_message
from notifications.providers.base import (
    Message,
    PermanentProviderError,
    Provider,
    ProviderError,
    ProviderNotConfiguredError,
    RateLimitedError,
    SendResult,
    TransientProviderError,
)

_TRUE = ("1", "true", "yes", "on")


def parse_smtp_url(url: str) -> dict[str, Any]:
    """The keyword arguments of Django's SMTP ``EmailBackend`` for ``url``.

    Raises ValueError for a scheme other than smtp/smtps.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError(f"SMTP_URL scheme must be smtp or smtps, not {parts.scheme!r}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    implicit_tls = parts.scheme == "smtps"
    starttls = not implicit_tls and query.get("starttls", "").lower() in _TRUE
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or (465 if implicit_tls else 25),
        "username": unquote(parts.username) if parts.username else "",
        "password": unquote(parts.password) if parts.password else "",
        "use_ssl": implicit_tls,
        "use_tls": starttls,
        "timeout": float(query.get("timeout") or DEFAULT_TIMEOUT),
    }


class _SmtpEmail(EmailMultiAlternatives):
    def message(self, *args: Any, **kwargs: Any) -> Any:
        mime = super().message(*args, **kwargs)
        if mime.is_multipart():
            # Left unset, the email package draws a boundary and compiles a regular expression
            # per message to make sure no body line is that boundary (a third of the time it
            # takes to write the message). A random one is checked with a substring test.
            boundary = f"=={uuid.uuid4().hex}=="
            if boundary not in self.body and all(
                boundary not in str(c) for c, _ in self.alternatives
            ):
                mime.set_boundary(boundary)
        return mime


class SmtpEmailProvider(Provider):
    name = "smtp"
    channel = "email"
    idempotent = False
    IDLE_CHECK_SECONDS = 5.0

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        super().__init__(alias, options)
        self._local = threading.local()

    def check_configuration(self) -> None:
        url = self.options.get("URL") or ""
        if not url:
            raise ProviderNotConfiguredError(f"{self.alias}: SMTP_URL is not set")
        try:
            self.connection_options = parse_smtp_url(url)
        except ValueError as exc:
            raise ProviderNotConfiguredError(f"{self.alias}: {exc}") from exc

    def _connection(self) -> EmailBackend:
        """This thread's open connection (see the module's docstring)."""
        backend: EmailBackend | None = getattr(self._local, "backend", None)
        if backend is not None and backend.connection is not None:
            if time.monotonic() - getattr(self._local, "used", 0.0) < self.IDLE_CHECK_SECONDS:
                return backend
            try:
                if backend.connection.noop()[0] == 250:
                    return backend
            except (smtplib.SMTPException, OSError):
                pass
            self._drop()
        backend = EmailBackend(fail_silently=False, **self.connection_options)
        backend.open()
        self._local.backend, self._local.used = backend, time.monotonic()
        return backend

    def _drop(self) -> None:
        backend = getattr(self._local, "backend", None)
        self._local.backend = None
        if backend is not None:
            try:
                backend.close()
            except (smtplib.SMTPException, OSError):
                pass  # already gone: nothing to close

    def send(self, message: Message) -> SendResult:
        try:
            connection = self._connection()
            email = email_message(message, connection=connection, email_class=_SmtpEmail)
            domain = email.from_email.rpartition("@")[2].strip("> ") or None
            message_id = make_msgid(domain=domain)
            email.extra_headers["Message-ID"] = message_id
            email.send()
        except (smtplib.SMTPException, OSError) as exc:
            # The session's state after a refusal is unknown: the next message starts afresh.
            self._drop()
            raise self.error_for(exc) from exc
        self._local.used = time.monotonic()
        return SendResult(provider_message_id=message_id)

    def error_for(self, exc: Exception) -> ProviderError:
        """SMTP replies mapped to our classes.

        RFC 5321 section 4.2.1 (https://www.rfc-editor.org/rfc/rfc5321#section-4.2.1): 4yz is a
        transient failure, 5yz a permanent one; 421 (service closing) and the enhanced code
        4.7.x (RFC 3463, https://www.rfc-editor.org/rfc/rfc3463) are how servers say "slow
        down". A refused recipient with 5yz is a hard bounce.
        """
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            replies = list(exc.recipients.values())
            code, text = replies[0] if replies else (0, b"")
            detail = _text(text)
            if replies and all(c >= 500 for c, _ in replies):
                return PermanentProviderError(
                    f"recipient refused: {code} {detail}", code="hard_bounce", suppress=True
                )
            return self._transient(code, f"recipient deferred: {code} {detail}")
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return TransientProviderError(
                f"SMTP authentication failed: {exc.smtp_code}", code="auth"
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return TransientProviderError(str(exc), code="configuration")
        if isinstance(exc, smtplib.SMTPResponseException):
            code, detail = exc.smtp_code, _text(exc.smtp_error)
            if 500 <= code < 600:
                return PermanentProviderError(f"SMTP {code} {detail}", code="rejected")
            if code < 0:
                # smtplib's -1: the server answered something that is not SMTP at all.
                return TransientProviderError(f"not an SMTP answer: {detail}", code="malformed")
            return self._transient(code, f"SMTP {code} {detail}")
        # Disconnected, refused, timed out, TLS failure: nothing was accepted for delivery.
        return TransientProviderError(f"SMTP connection failed: {exc!r}"[:1000], code="network")

    def _transient(self, code: int, text: str) -> ProviderError:
        if code == 421 or " 4.7." in f" {text}":
            return RateLimitedError(text, code="rate_limited")
        return TransientProviderError(text, code="deferred")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:500]
