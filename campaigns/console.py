"""The staff console's JSON reads for the campaign pages, polled by
``campaigns/console/campaign.js``: a campaign's progress, and how many users a segment holds.
Staff only (``admin_view``), each checking the model's view permission."""

from __future__ import annotations

import re
import uuid

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework.exceptions import ValidationError as DRFValidationError

from campaigns import selectors
from campaigns.models import Campaign, Segment
from campaigns.progress import campaign_progress
from notifications.categories import category_get


def progress_view(request: HttpRequest, campaign_id: uuid.UUID) -> JsonResponse:
    """``{"status", "pause_reason", "total", "by_status", "percent", "per_second",
    "eta_seconds"}`` of a campaign, as the API's ``progress``."""
    if not request.user.has_perm("campaigns.view_campaign"):
        raise PermissionDenied
    campaign = Campaign.objects.filter(id=campaign_id).first()
    if campaign is None:
        raise Http404("No such campaign.")
    body = {
        "status": campaign.status,
        "status_label": campaign.get_status_display(),
        "pause_reason": campaign.pause_reason,
        **campaign_progress(campaign),
    }
    return JsonResponse(body, headers={"Cache-Control": "no-store"})


_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}")


def segment_count_view(request: HttpRequest, segment_id: uuid.UUID) -> JsonResponse:
    """``{"count"}``: the users a segment selects now (the campaign form shows it beside the
    segment chosen)."""
    if not request.user.has_perm("campaigns.view_segment"):
        raise PermissionDenied
    segment = Segment.objects.filter(id=segment_id).first()
    if segment is None:
        raise Http404("No such segment.")
    # Consent and preference rules are about the campaign's category (the form's, as chosen).
    category = request.GET.get("category") or None
    if category is not None and (not _SLUG.fullmatch(category) or category_get(category) is None):
        category = None
    try:
        count: int | None = selectors.segment_count(rules=segment.rules, category=category)
    except DRFValidationError:  # rules stored before a stricter validator
        count = None
    return JsonResponse({"count": count}, headers={"Cache-Control": "no-store"})
