"""Mailgun (email, fallback) through anymail's Mailgun backend.

The message id is the ``id`` Mailgun answers (``<…@domain>``); its webhooks carry the same
Message-Id header, which anymail's tracking view normalises to the same angle-bracketed form.
"""

from __future__ import annotations

from typing import Any

from anymail.backends.mailgun import EmailBackend
from anymail.exceptions import AnymailError

from notifications.providers._email import AnymailEmailProvider
from notifications.providers.base import ProviderError, TransientProviderError


class MailgunEmailProvider(AnymailEmailProvider):
    name = "mailgun"
    backend_class = EmailBackend
    # No batch call (``batch_size`` 0): Mailgun answers one message id for a batch send, and
    # its webhooks are matched to a delivery by that id alone; a batch would need matching on
    # (id, recipient) first. Its ``%recipient.key%`` tags would also need anymail's
    # ``merge_data`` keys rewritten.
    batch_size = 0

    def backend_options(self) -> dict[str, Any]:
        options = super().backend_options()
        if self.options.get("SENDER_DOMAIN"):
            options["sender_domain"] = self.options["SENDER_DOMAIN"]
        return options

    def error_for(self, exc: AnymailError) -> ProviderError:
        """Mailgun's answers, as anymail raises them.

        https://documentation.mailgun.com/docs/mailgun/api-reference/api-overview#status-codes
        — 400 refuses the message (a bad address included), 401 our key, 402 a valid request
        Mailgun refused (e.g. a sandbox recipient), 404 an unknown sending domain (ours, not the
        message's: the next provider should take over),
        413 a message too large, 429 rate limiting (``Retry-After`` when given), 5xx Mailgun.
        """
        error = super().error_for(exc)
        if error.status_code == 404:
            return TransientProviderError(
                str(error), code="configuration", status_code=error.status_code
            )
        return error
