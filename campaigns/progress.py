"""A campaign's progress: its deliveries by status, its ledger by state, per step and variant,
the rate of the last minute and the time left — two aggregate queries, whatever its size."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from campaigns.models import Campaign, CampaignRecipient
from notifications.models import Delivery

# Statuses a delivery waits in; every other one is done.
WAITING = ("scheduled", "held", "queued", "sending")
RATE_WINDOW = dt.timedelta(seconds=60)
# A delivery handed over after more than one attempt may have reached its recipient twice (a
# worker died after the provider's answer, and the lease's sweep sent it again).
POSSIBLY_TWICE = ("sent", "delivered", "ambiguous")


def campaign_progress(campaign: Campaign, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """``{"total", "by_status", "percent", "per_second", "eta_seconds"}`` plus ``by_state``
    (ledger rows), ``possibly_duplicated`` (handed over after more than one attempt: maybe
    twice), ``steps`` (per step: ledger states and delivery statuses) and ``variants``
    (per step and variant: delivery statuses). ``total`` is the deliveries written plus the
    ledger rows still pending (each one at least a delivery to come)."""
    now = now or timezone.now()
    since = now - RATE_WINDOW
    by_status = {status: 0 for status in Delivery.Status.values}
    steps: dict[str, dict[str, Any]] = {}
    variants: dict[tuple[str, str], dict[str, int]] = {}
    recent = retried = 0
    for step_id, variant, status, n, moved, again in (
        Delivery.objects.filter(notification__request__campaign_id=campaign.id)
        .values_list("notification__request__step_id", "variant", "status")
        .annotate(
            n=Count("id"),
            moved=Count("id", filter=Q(updated_at__gte=since)),
            again=Count("id", filter=Q(attempts__gt=1)),
        )
        .values_list("notification__request__step_id", "variant", "status", "n", "moved", "again")
        .order_by()
    ):
        if status in POSSIBLY_TWICE:
            retried += again
        by_status[status] = by_status.get(status, 0) + n
        step = steps.setdefault(str(step_id), {"by_state": {}, "by_status": {}})
        step["by_status"][status] = step["by_status"].get(status, 0) + n
        per_variant = variants.setdefault((str(step_id), variant), {})
        per_variant[status] = per_variant.get(status, 0) + n
        if status not in WAITING:
            recent += moved
    by_state = {state: 0 for state in CampaignRecipient.State.values}
    for step_id, state, n in (
        CampaignRecipient.objects.filter(run__campaign_id=campaign.id)
        .values_list("step_id", "state")
        .annotate(n=Count("id"))
        .values_list("step_id", "state", "n")
        .order_by()
    ):
        by_state[state] += n
        step = steps.setdefault(str(step_id), {"by_state": {}, "by_status": {}})
        step["by_state"][state] = step["by_state"].get(state, 0) + n
    written = sum(by_status.values())
    total = written + by_state[CampaignRecipient.State.PENDING]
    done = written - sum(by_status[s] for s in WAITING)
    per_second = round(recent / RATE_WINDOW.total_seconds(), 2)
    left = total - done
    return {
        "total": total,
        "by_status": by_status,
        "percent": round(100 * done / total, 1) if total else 0.0,
        "per_second": per_second,
        "eta_seconds": round(left / per_second)
        if per_second and left
        else (0 if not left else None),
        "by_state": by_state,
        "possibly_duplicated": retried,
        "steps": steps,
        "variants": [
            {"step_id": step_id, "variant": variant, "by_status": counts}
            for (step_id, variant), counts in sorted(variants.items())
        ],
    }
