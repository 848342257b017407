"""Access logging: who read someone's conversation or a notification's content, and when.

Reads of personal content by someone other than its owner join the audit trail as entries of
their own actions (``ACTIONS``), written through ``access_record`` by the console pages that show
a transcript, a message or a notification's content, and by the messaging API and the websocket
gateway when a service reads with a token issued to act for a user. One entry per page, response
or connection, never one per message shown.

The entry is written in the view's own transaction (the admin's, or autocommit in the API), before
the content goes out, and a failure to write it fails the page: content shown without its record
is the gap this log exists to close, and the insert fails only when the database does, which the
page needs anyway. Nothing is deferred to ``on_commit`` or a task, which could lose the entry
after the content was seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from communication.audit import audit_record
from communication.models import AuditEntry

CONVERSATION_VIEWED = "conversation.viewed"
MESSAGE_VIEWED = "message.viewed"
NOTIFICATION_CONTENT_VIEWED = "notification.content_viewed"
CONVERSATION_READ_BY_SERVICE = "conversation.read_by_service"
ACTIONS = (
    CONVERSATION_VIEWED,
    MESSAGE_VIEWED,
    NOTIFICATION_CONTENT_VIEWED,
    CONVERSATION_READ_BY_SERVICE,
)


def access_record(
    action: str,
    object_type: str,
    object_id: Any,
    *,
    details: Mapping[str, Any] | None = None,
    actor: str | None = None,
) -> AuditEntry:
    """One access entry: the actor is the request's (``staff:<username>`` in the console) unless
    given (the service acting for a user)."""
    if action not in ACTIONS:
        raise ValueError(f"Not an access action: {action}")
    return audit_record(action, object_type, object_id, changes=details, actor=actor)


def acting_service(claims: Any) -> str | None:
    """The service a user token was issued to act for its user (RFC 8693 token exchange: the
    ``act`` claim names the acting party), as an audit actor; None for the user's own token."""
    if not isinstance(claims, Mapping):
        return None
    act = claims.get("act")
    if not isinstance(act, Mapping):
        return None
    acting = act.get("client_id") or act.get("sub")
    if not isinstance(acting, str) or not acting or acting == claims.get("sub"):
        return None
    return f"service:{acting}"
