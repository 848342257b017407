"""The reputation guardrail: a campaign pauses itself when its recent deliveries bounce or draw
complaints too often (below the rates at which a provider reviews the account). Only the
campaign's own deliveries are read and only it is paused: transactional sends keep flowing."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection

from campaigns.models import Campaign
from campaigns.services.fanout import campaign_stop_sending
from campaigns.services.status import campaign_transition
from communication.exceptions import ConflictError

logger = logging.getLogger(__name__)

# The campaign's last deliveries that reached a provider, and their hard bounces and complaints
# (provider events: ``bounced`` unless soft, ``complained``). Bounded by the window.
_RATES_SQL = """
WITH recent AS (
    SELECT d.id FROM notifications_delivery d
    JOIN notifications_notification n ON n.id = d.notification_id
    JOIN notifications_notificationrequest r ON r.id = n.request_id
    WHERE r.campaign_id = %s AND d.status IN ('sent', 'delivered', 'failed')
    ORDER BY d.updated_at DESC, d.id DESC LIMIT %s
)
SELECT
    (SELECT count(*) FROM recent),
    count(DISTINCT e.delivery_id) FILTER (
        WHERE e.type = 'bounced' AND coalesce(e.data->>'bounce', 'hard') <> 'soft'
    ),
    count(DISTINCT e.delivery_id) FILTER (WHERE e.type = 'complained')
FROM analytics_event e
WHERE e.delivery_id IN (SELECT id FROM recent) AND e.type IN ('bounced', 'complained')
"""


def guardrail_rates(campaign: Campaign) -> tuple[int, int, int]:
    """``(deliveries with an outcome, hard bounces, complaints)`` among the campaign's last
    ``CAMPAIGN_GUARDRAIL_WINDOW`` deliveries (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(_RATES_SQL, [campaign.id, settings.CAMPAIGN_GUARDRAIL_WINDOW])
        total, bounces, complaints = cursor.fetchone()
    return int(total), int(bounces), int(complaints)


def guardrail_check(campaign: Campaign) -> bool:
    """Pauses a running ``campaign`` whose hard-bounce or complaint rate over its last
    deliveries passes the limits, once at least ``CAMPAIGN_GUARDRAIL_MIN`` have an outcome;
    ``pause_reason`` says which and how much. Returns whether it paused it."""
    if campaign.status != Campaign.Status.RUNNING:
        return False
    total, bounces, complaints = guardrail_rates(campaign)
    if total < settings.CAMPAIGN_GUARDRAIL_MIN:
        return False
    reason = ""
    if bounces / total > settings.CAMPAIGN_GUARDRAIL_BOUNCE_RATE:
        reason = (
            f"hard bounce rate {100 * bounces / total:.1f} % over the last {total:,} deliveries"
        )
    elif complaints / total > settings.CAMPAIGN_GUARDRAIL_COMPLAINT_RATE:
        reason = (
            f"complaint rate {100 * complaints / total:.2f} % over the last {total:,} deliveries"
        )
    if not reason:
        return False
    try:
        campaign_transition(campaign, Campaign.Status.PAUSED, pause_reason=reason)
    except ConflictError:
        return False
    campaign_stop_sending(campaign, cancel=False)
    logger.warning(
        "campaign paused by the guardrail", extra={"campaign": str(campaign.id), "reason": reason}
    )
    return True
