"""SendGrid (email, primary) through anymail's SendGrid backend.

The message id is the ``anymail_id`` anymail generates and sends as a custom arg: SendGrid echoes it
in every event-webhook record, which is how ``/webhooks/anymail/sendgrid/tracking/`` finds the
delivery again. A batch call (``send_batch``) sends one personalization per recipient, each with its
own ``anymail_id``, ``delivery_id``, headers and ``substitutions``.
"""

from __future__ import annotations

import time

from anymail.backends.sendgrid import EmailBackend
from anymail.exceptions import AnymailAPIError, AnymailError

from notifications.providers._email import AnymailEmailProvider
from notifications.providers.base import ProviderError, RateLimitedError


class SendGridEmailProvider(AnymailEmailProvider):
    name = "sendgrid"
    backend_class = EmailBackend
    # https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send#limitations — at
    # most 1,000 personalizations a request, 10,000 bytes of substitutions each. anymail gives
    # each personalization its own ``anymail_id`` custom arg: one message id per recipient.
    batch_size = 1000
    substitutions_max_bytes = 10_000

    def error_for(self, exc: AnymailError) -> ProviderError:
        """SendGrid's answers, as anymail raises them.

        https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send#responses and
        https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits
        — 400/413 refuse the message, 401/403 refuse our key, 429 comes with ``X-RateLimit-Reset``
        (a Unix time) rather than always a ``Retry-After``, 5xx are SendGrid's own trouble.
        """
        error = super().error_for(exc)
        if isinstance(error, RateLimitedError) and error.retry_after is None:
            response = getattr(exc, "response", None) if isinstance(exc, AnymailAPIError) else None
            reset = response.headers.get("X-RateLimit-Reset") if response is not None else None
            try:
                error.retry_after = max(float(reset) - time.time(), 0.0) if reset else None
            except ValueError:
                pass
        return error
