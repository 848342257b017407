"""The provider interface: what the pipeline hands a provider and what it gets back.

A provider is a small class, one module per vendor, chosen and ordered by settings (see
``notifications.providers.registry``). ``send`` either returns a :class:`SendResult` or raises a
:class:`ProviderError` whose class carries the retry decision:

- :class:`PermanentProviderError`: never retried on any provider (invalid number, hard bounce,
  refused content). ``suppress=True`` also feeds the suppression list.
- :class:`TransientProviderError`: retried with backoff, then the next provider of the channel.
- :class:`RateLimitedError`: transient, with the provider's ``Retry-After`` honoured.
- :class:`AmbiguousProviderError`: the request may have reached the provider (a timeout or 5xx
  mid-call) and the provider has no idempotency: the delivery becomes ``ambiguous`` and is resent
  only where the channel's setting allows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Message:
    channel: str
    to: str  # an email address, an E.164 number, or a device token / subscription
    subject: str = ""
    text: str = ""
    html: str = ""
    title: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. List-Unsubscribe for email
    image: str = ""  # push: a picture URL
    link: str = ""  # push / in-app: where a tap leads (deep link or URL)
    from_email: str = ""
    # Correlates webhooks with the delivery (sent as provider metadata / custom args where the
    # vendor supports it) and serves as the idempotency key where the vendor accepts one.
    delivery_id: str = ""
    category: str = ""
    tags: list[str] = field(default_factory=list)
    # The recipient's own values as they may appear in the text (its variables, HTML-escaped
    # too, and its tracking and unsubscribe URLs): where two recipients' texts may differ for a
    # batch call to carry them as substitutions (``providers._merge``).
    variables: list[str] = field(default_factory=list)


@dataclass
class SendResult:
    provider_message_id: str
    status: str = "sent"  # or "delivered" when the provider confirms synchronously
    cost: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    permanent = False
    ambiguous = False
    # The alias to blame, set by a caller that fans out over several providers (push); empty
    # when the error comes from the provider the pipeline called.
    provider = ""

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        retry_after: float | None = None,
        suppress: bool = False,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after
        self.suppress = suppress
        self.status_code = status_code


class TransientProviderError(ProviderError):
    pass


class RateLimitedError(TransientProviderError):
    pass


class AmbiguousProviderError(TransientProviderError):
    ambiguous = True


class PermanentProviderError(ProviderError):
    permanent = True


class ProviderNotConfiguredError(Exception):
    """Settings name a provider whose credentials are missing; it is left out of the chain."""


class Provider:
    """Base class. Subclasses set ``name`` and ``channel`` and implement :meth:`send`.

    ``options`` come from the alias entry in settings (credentials, API URL, sender…).
    ``check_configuration`` raises ProviderNotConfiguredError when a credential is missing.
    ``rate_per_second`` / ``burst`` feed the Redis token bucket shared by every worker.
    """

    name = "base"
    channel = ""
    # Whether a request that may have reached the provider can be sent again safely.
    idempotent = False
    # OPTIONS without which the provider cannot send (credentials, sender).
    required_options: tuple[str, ...] = ()
    # How many messages one call of :meth:`send_batch` takes; 0: the vendor has no batch call.
    batch_size = 0

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        self.alias = alias
        self.options = options
        self.rate_per_second = float(options.get("RATE_PER_SECOND") or 0)  # 0 = unlimited
        self.burst = int(options.get("BURST") or max(self.rate_per_second, 1))
        self.check_configuration()

    def check_configuration(self) -> None:
        """Raises ProviderNotConfiguredError naming the ``required_options`` that are not set.

        Providers that check more (a URL to parse, a key to load) override it and call this first.
        """
        missing = [name for name in self.required_options if not self.options.get(name)]
        if missing:
            raise ProviderNotConfiguredError(f"{self.alias}: missing {', '.join(missing)}")

    def send(self, message: Message) -> SendResult:
        """Sends one message. Raises a ProviderError subclass; never returns on failure."""
        raise NotImplementedError

    def send_batch(self, messages: list[Message]) -> list[SendResult | None]:
        """Sends up to ``batch_size`` messages in one vendor call; overridden by providers whose
        ``batch_size`` is set.

        Answers, in order, each message's :class:`SendResult`, or None for a message the call
        did not carry (its content does not fit the call's shared copy): the pipeline sends that
        one alone through :meth:`send`, as any single delivery. Raises a ProviderError when the
        call as a whole failed: the pipeline treats a transient one as each message's own
        failure (retry, failover), and sends each message alone after a permanent one (one
        refused address must not fail the others).
        """
        return [None] * len(messages)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.alias}>"
