"""Stand-in for the engine's progress module (replaced at merge): a campaign's deliveries by
status, counted in one query."""

from __future__ import annotations

from typing import Any

from django.db.models import Count

from campaigns.models import Campaign
from notifications.models import Delivery


def campaign_progress(campaign: Campaign) -> dict[str, Any]:
    """``{"total", "by_status", "percent", "per_second", "eta_seconds"}`` over the deliveries of
    the campaign's requests; ``by_status`` has every delivery status."""
    by_status = dict.fromkeys(Delivery.Status.values, 0)
    rows = (
        Delivery.objects.filter(notification__request__campaign_id=campaign.id)
        .values("status")
        .annotate(n=Count("id"))
    )
    for row in rows:
        by_status[row["status"]] = row["n"]
    total = sum(by_status.values())
    pending = by_status["scheduled"] + by_status["queued"] + by_status["sending"]
    done = total - pending
    return {
        "total": total,
        "by_status": by_status,
        "percent": round(100 * done / total, 1) if total else 0.0,
        "per_second": 0.0,
        "eta_seconds": None,
    }
