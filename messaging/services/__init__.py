"""The verbs of messaging: every write goes through here, one module per family of verbs
(Zulip's ``zerver/actions`` being the model); the public names are re-exported here.

Realtime events go out through ``communication.realtime`` inside the transaction (or the one
statement) that makes the change, persisted with the user's next ``seq`` and sent after commit,
so a client never sees an event for a change that rolled back and a reconnecting one can replay
it.
"""

from communication.exceptions import NotFoundError
from messaging.services.access import MANAGER_ROLES, PermissionDeniedError
from messaging.services.attachments import attachment_upload
from messaging.services.conversations import (
    conversation_create,
    conversation_mute,
    conversation_update,
)
from messaging.services.e2e import (
    device_key_delete,
    device_key_payload,
    device_key_publish,
    device_keys_of,
)
from messaging.services.edits import message_delete, message_edit
from messaging.services.offline import (
    participant_notify_offline,
    schedule_offline_notifications,
)
from messaging.services.participants import (
    conversation_leave,
    participant_add,
    participant_remove,
    support_assign,
)
from messaging.services.payloads import (
    attachment_payload,
    conversation_payload,
    message_payload,
    message_preview,
    participant_payload,
    presence_event,
)
from messaging.services.presence import presence_seen, presence_sweep
from messaging.services.receipts import conversation_mark_delivered, conversation_mark_read
from messaging.services.send import message_send, message_send_async, system_message_send

__all__ = [
    "MANAGER_ROLES",
    "NotFoundError",
    "PermissionDeniedError",
    "attachment_payload",
    "attachment_upload",
    "conversation_create",
    "conversation_leave",
    "conversation_mark_delivered",
    "conversation_mark_read",
    "conversation_mute",
    "conversation_payload",
    "conversation_update",
    "device_key_delete",
    "device_key_payload",
    "device_key_publish",
    "device_keys_of",
    "message_delete",
    "message_edit",
    "message_payload",
    "message_preview",
    "message_send",
    "message_send_async",
    "participant_add",
    "participant_notify_offline",
    "participant_payload",
    "participant_remove",
    "presence_event",
    "presence_seen",
    "presence_sweep",
    "schedule_offline_notifications",
    "support_assign",
    "system_message_send",
]
