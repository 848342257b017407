"""A campaign's status, moved only here: the life cycle (``campaigns.services.campaigns``) and the
engine (runs, fan-out, the guardrail) both go through :func:`campaign_transition`."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from campaigns.models import Campaign
from communication.audit import audit_record, field_changes
from communication.exceptions import ConflictError
from notifications.services import webhooks

S = Campaign.Status

TRANSITIONS: dict[str, tuple[str, ...]] = {
    S.DRAFT: (S.PENDING_APPROVAL, S.SCHEDULED, S.CANCELLED),
    S.PENDING_APPROVAL: (S.SCHEDULED, S.DRAFT, S.CANCELLED),
    S.SCHEDULED: (S.RUNNING, S.DRAFT, S.PAUSED, S.CANCELLED, S.COMPLETED),
    S.RUNNING: (S.PAUSED, S.COMPLETED, S.CANCELLED, S.SCHEDULED),
    S.PAUSED: (S.RUNNING, S.SCHEDULED, S.CANCELLED),
    S.COMPLETED: (),
    S.CANCELLED: (),
}
FINAL = (S.COMPLETED, S.CANCELLED)

# The audit trail's verb for entering a status, unless the caller names its own (approve, resume).
_VERBS: dict[str, str] = {
    S.DRAFT: "unschedule",
    S.PENDING_APPROVAL: "submit",
    S.SCHEDULED: "schedule",
    S.RUNNING: "start",
    S.PAUSED: "pause",
    S.COMPLETED: "complete",
    S.CANCELLED: "cancel",
}

# The timestamp a status stamps when entered.
_STAMPS: dict[str, str] = {
    S.SCHEDULED: "scheduled_at",
    S.RUNNING: "started_at",
    S.COMPLETED: "completed_at",
    S.CANCELLED: "cancelled_at",
}


def campaign_transition(
    campaign: Campaign, to: str, *, verb: str | None = None, **fields: Any
) -> Campaign:
    """Moves ``campaign`` to ``to`` with a conditional UPDATE on the status it was read with, so
    two processes racing (a pause and the fan-out completing) cannot both win; ``fields`` are
    saved with it, and the audit trail records ``campaign.<verb>`` (by default the status's
    own verb) in the caller's transaction. Raises a 409 ``invalid_transition`` for a move ``TRANSITIONS`` does not allow
    or a campaign whose status changed meanwhile."""
    was = campaign.status
    if to not in TRANSITIONS.get(str(was), ()):
        raise ConflictError(f"A {was} campaign cannot become {to}.", code="invalid_transition")
    now = timezone.now()
    stamp = _STAMPS.get(to)
    if stamp and stamp not in fields and not (stamp == "started_at" and campaign.started_at):
        fields[stamp] = now
    changed = Campaign.objects.filter(pk=campaign.pk, status=was).update(
        status=to, updated_at=now, **fields
    )
    if not changed:
        raise ConflictError(
            "The campaign changed meanwhile; read it again.", code="invalid_transition"
        )
    before = {"status": was, **{name: getattr(campaign, name) for name in fields}}
    campaign.status = to
    campaign.updated_at = now
    for name, value in fields.items():
        setattr(campaign, name, value)
    if to == S.COMPLETED:
        webhooks.emit([webhooks.campaign_completed_event(campaign)])
    audit_record(
        f"campaign.{verb or _VERBS[to]}",
        "campaigns.campaign",
        campaign.pk,
        changes=field_changes(before, {"status": to, **fields}),
    )
    return campaign
