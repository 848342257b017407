"""Provider delivery events, normalised: what every webhook parser produces."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# Event names a parser may produce.
EVENTS = (
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "complained",
    "failed",
    "opened",
    "clicked",
    "unsubscribed",
)


@dataclass
class TrackingEvent:
    provider: str  # the provider alias that sent the message: "sendgrid", "twilio" …
    provider_message_id: str
    event: str  # one of EVENTS
    occurred_at: dt.datetime
    permanent: bool = False  # bounced/failed: a hard bounce or a permanent refusal
    reason: str = ""
    event_id: str = ""  # the provider's id for this event, for de-duplication
    suppress: str = ""  # "" or a Suppression reason to record for the address
    # bounced: "hard" (the address does not exist: suppressed) or "soft" (this message was
    # refused; the address stays usable), "" when the provider does not say.
    bounce: str = ""
    data: dict = field(default_factory=dict)
