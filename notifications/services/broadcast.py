"""A user's send to a whole organization (``POST /api/v1/organizations/{id}/broadcast``): who
may, then the one send path with the organization as its one recipient, so the members are
expanded and their preferences applied exactly as for a service's organization-wide send.

Who may: a member of the organization or of one above it (anyone else is answered as if it did
not exist), holding one of the ``broadcast_roles`` in force for the target organization.
"""

from __future__ import annotations

from typing import Any

from communication import organizations
from communication.exceptions import CommunicationNotAllowedError, NotFoundError
from communication.models import Organization, User
from notifications.api.serializers import BroadcastSerializer
from notifications.services.admission import send_admit
from notifications.services.send import SendOutcome, notification_send


def broadcast_caller(user: User) -> str:
    """The ``caller`` a user's broadcasts carry (its requests, idempotency keys and webhook
    events are that caller's). Services' callers are their bare client ids, the console's
    ``admin:…``, campaigns' ``campaign:…``."""
    return f"user:{user.external_id}"


def broadcast_target(*, user: User, organization_id: str) -> Organization:
    """The organization ``user`` may broadcast to: 404 ``unknown_organization`` when they cannot
    see it (as ``GET /organizations/{id}`` answers), 403 ``communication_not_allowed`` when
    none of their roles is in its ``broadcast_roles``."""
    org = organizations.organization_get_for(user.organization or None, organization_id)
    if org is None or not user.external_id:
        raise NotFoundError("No such organization.", code="unknown_organization")
    policy = organizations.organization_policy(org.id)
    if not policy.allows_broadcast(user.roles or []):
        allowed = ", ".join(policy.broadcast_roles) or "no role"
        raise CommunicationNotAllowedError(
            f"broadcast_roles: {allowed} may send to the whole of {org.id}; your roles do not "
            "include any of them."
        )
    return org


def organization_broadcast(
    *, user: User, organization_id: str, body: Any, idempotency_key: str = ""
) -> SendOutcome:
    """Sends ``body`` (the request's, validated here by ``BroadcastSerializer`` once the user is
    known to be allowed: refusals come before a bad body) to the members of the organization,
    through ``notification_send``."""
    org = broadcast_target(user=user, organization_id=organization_id)
    payload = dict(BroadcastSerializer.validated(body))
    recipient = {
        "organization": org.id,
        "include_descendants": payload.pop("include_descendants"),
        "roles": sorted(set(payload.pop("roles"))),
    }
    send_admit(priority=payload["priority"], scheduled_at=None)
    return notification_send(
        caller=broadcast_caller(user),
        payload={**payload, "recipients": [recipient]},
        idempotency_key=idempotency_key,
    )
