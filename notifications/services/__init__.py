"""The verbs of notifications, one module per family (the model is Zulip's ``zerver/actions``):

- ``send``: accept a request (idempotency, recipients, rules, the one write);
- ``requests``: a caller's request afterwards (status, cancel, reschedule);
- ``delivery``: claim, render and send a batch of deliveries; staff's resend;
- ``outcomes``: record what an attempt ended in (accepted, retry, failover, failed);
- ``sweeps``: the beat's housekeeping;
- ``inbox``: the user's read state;
- ``preferences``: preferences, quiet hours, consent;
- ``tracking``: provider events, suppressions, unsubscribes.

Only these modules write notification rows. Callers use the names re-exported here
(``from notifications import services; services.notification_send(...)``).
"""

from notifications.providers.registry import provider_breaker
from notifications.services.delivery import (
    deliveries_attempt,
    deliveries_claim,
    deliveries_resend_ambiguous,
    delivery_attempt,
)
from notifications.services.inbox import (
    notification_dismiss,
    notification_mark,
    notification_read_all,
    notifications_publish_created,
    unread_count,
)
from notifications.services.outcomes import deliveries_record_sent
from notifications.services.preferences import consent_record, preferences_set, quiet_hours_set
from notifications.services.requests import (
    CANCELLABLE,
    request_cancel,
    request_get,
    request_reschedule,
    request_status,
)
from notifications.services.send import SendOutcome, notification_send, request_body
from notifications.services.sweeps import deliveries_sweep, idempotency_prune
from notifications.services.tracking import (
    address_normalize,
    delivery_track,
    suppression_add,
    unsubscribe_apply,
)

__all__ = [
    "CANCELLABLE",
    "SendOutcome",
    "address_normalize",
    "consent_record",
    "deliveries_attempt",
    "deliveries_claim",
    "deliveries_record_sent",
    "deliveries_resend_ambiguous",
    "deliveries_sweep",
    "delivery_attempt",
    "delivery_track",
    "idempotency_prune",
    "notification_dismiss",
    "notification_mark",
    "notification_read_all",
    "notification_send",
    "notifications_publish_created",
    "preferences_set",
    "provider_breaker",
    "quiet_hours_set",
    "request_body",
    "request_cancel",
    "request_get",
    "request_reschedule",
    "request_status",
    "suppression_add",
    "unread_count",
    "unsubscribe_apply",
]
