"""What the staff console shows about the pipeline as a whole: provider health (its own page)."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, Q
from django.template.response import TemplateResponse
from django.utils import timezone

from analytics.models import Event
from notifications import services
from notifications.providers import registry


def provider_health(model_admin, request):
    since = timezone.now() - dt.timedelta(hours=1)
    stats = {
        row["provider"]: row
        for row in Event.objects.filter(occurred_at__gte=since)
        .exclude(provider="")
        .values("provider")
        .annotate(
            sent=Count("id", filter=Q(type="sent")),
            errors=Count("id", filter=Q(type__in=["retry", "failed", "ambiguous"])),
        )
    }
    rows = []
    for channel in ("email", "sms", "push"):
        for position, provider in enumerate(registry.chain(channel)):
            s = stats.get(provider.alias, {"sent": 0, "errors": 0})
            total = s["sent"] + s["errors"]
            rows.append(
                {
                    "channel": channel,
                    "position": position + 1,
                    "alias": provider.alias,
                    "circuit": services.provider_breaker(provider.alias).state()
                    if provider.alias != "outbox"
                    else "—",
                    "sent": s["sent"],
                    "errors": s["errors"],
                    "error_rate": f"{100 * s['errors'] / total:.1f} %" if total else "—",
                }
            )
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Provider health",
        "rows": rows,
        "opts": model_admin.model._meta,
    }
    return TemplateResponse(request, "admin/notifications/provider_health.html", context)
