"""The verbs of notifications, one module per family (the model is Zulip's ``zerver/actions``):

- ``send``: accept a request (idempotency, recipients, rules, the one write);
- ``broadcast``: a user's send to a whole organization (``broadcast_roles``), through ``send``;
- ``admission``: refuse a send while its priority class's backlog is past its bound;
- ``requests``: a caller's request afterwards (status, cancel, reschedule), staff's cancel;
- ``cancellation``: the one cancel (by request, key, staff, or a read stopping an escalation);
- ``delivery``: claim, render and send a batch of deliveries; staff's resend;
- ``outcomes``: record what an attempt ended in (accepted, retry, failover, failed);
- ``caps``: frequency caps, kept by ``delivery`` just before the providers;
- ``sweeps``: the beat's housekeeping;
- ``staff``: what staff do from the console (resend a failed delivery, send a test);
- ``inbox``: the user's read state;
- ``preferences``: preferences and delivery modes, quiet hours, consent;
- ``digests``: held deliveries released as one digest per user and channel;
- ``tracking``: provider events, suppressions, unsubscribes.

Only these modules write notification rows. Callers use the names re-exported here
(``from notifications import services; services.notification_send(...)``).
"""

from notifications.providers.registry import provider_breaker
from notifications.services.admission import OverloadedError, send_admit
from notifications.services.broadcast import organization_broadcast
from notifications.services.cancellation import (
    cancellation_key_cancel,
    escalations_stop,
    notification_push_opened,
)
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
    deliveries_cancel,
    notification_cancel,
    request_cancel,
    request_get,
    request_reschedule,
    request_status,
)
from notifications.services.send import SendOutcome, notification_send, request_body
from notifications.services.staff import (
    RESENDABLE,
    TEST_CATEGORY,
    delivery_resend,
    template_version_test_content,
    test_send_payload,
)
from notifications.services.sweeps import deliveries_sweep, idempotency_prune
from notifications.services.tracking import (
    address_normalize,
    delivery_track,
    suppression_add,
    suppressions_remove,
    unsubscribe_apply,
)

__all__ = [
    "CANCELLABLE",
    "RESENDABLE",
    "TEST_CATEGORY",
    "OverloadedError",
    "SendOutcome",
    "address_normalize",
    "cancellation_key_cancel",
    "consent_record",
    "deliveries_attempt",
    "deliveries_cancel",
    "deliveries_claim",
    "deliveries_record_sent",
    "deliveries_resend_ambiguous",
    "deliveries_sweep",
    "delivery_attempt",
    "delivery_resend",
    "delivery_track",
    "escalations_stop",
    "idempotency_prune",
    "notification_cancel",
    "notification_dismiss",
    "notification_mark",
    "notification_push_opened",
    "notification_read_all",
    "notification_send",
    "notifications_publish_created",
    "organization_broadcast",
    "preferences_set",
    "provider_breaker",
    "quiet_hours_set",
    "request_body",
    "request_cancel",
    "request_get",
    "request_reschedule",
    "request_status",
    "send_admit",
    "suppression_add",
    "suppressions_remove",
    "template_version_test_content",
    "test_send_payload",
    "unread_count",
    "unsubscribe_apply",
]
