"""What the staff console shows about the pipeline as a whole: the dashboard's panels (sends,
provider health, backlog, failures, scheduled sends due soon) and the provider health page.

Reads go through ``notifications.dashboard``; this module only shapes them for the templates.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format

from communication import console
from notifications import dashboard, services
from notifications.models import Channel, Delivery
from notifications.providers import registry

PROVIDER_CHANNELS = ("email", "sms", "push")
CHANNEL_LABELS = dict(Channel.choices)
# The chart's colours per status: done (green, blue), not yet (greys), went wrong (red, orange).
STATUS_COLORS = {
    "delivered": "#16a34a",
    "sent": "#3b82f6",
    "sending": "#93c5fd",
    "queued": "#94a3b8",
    "scheduled": "#cbd5e1",
    "held": "#e2e8f0",
    "ambiguous": "#f97316",
    "failed": "#dc2626",
    "suppressed": "#a855f7",
    "skipped": "#eab308",
    "cancelled": "#64748b",
}
CHANNEL_COLORS = {"email": "#6366f1", "sms": "#14b8a6", "push": "#f59e0b", "in_app": "#ec4899"}
STATUS_ORDER = sorted(Delivery.RANK, key=lambda s: (Delivery.RANK[s], s))
BREAKER_BADGES = {"closed": "success", "half_open": "warning", "open": "danger"}
# Chart.js options as JSON (unfold's chart component passes them through an attribute: no
# inline script, which the console's policy refuses): bars stacked per day, with a legend.
CHART_OPTIONS = json.dumps(
    {
        "responsive": True,
        "aspectRatio": 2.4,
        "plugins": {
            "legend": {
                "display": True,
                "position": "bottom",
                "align": "start",
                "labels": {
                    "usePointStyle": True,
                    "pointStyle": "circle",
                    "boxWidth": 6,
                    "boxHeight": 6,
                    "color": "#9ca3af",
                },
            },
            "tooltip": {"mode": "index", "intersect": False},
        },
        "scales": {
            "x": {
                "stacked": True,
                "grid": {"display": False},
                "border": {"display": False},
                "ticks": {"color": "#9ca3af"},
            },
            "y": {
                "stacked": True,
                "beginAtZero": True,
                "border": {"display": False},
                "ticks": {"precision": 0, "color": "#9ca3af"},
            },
        },
        "datasets": {"bar": {"borderRadius": 3, "maxBarThickness": 40}},
    }
)
HEALTH_WINDOWS = {"1h": ("last hour", 1), "24h": ("last 24 hours", 24), "7d": ("last 7 days", 168)}
DASHBOARD_WINDOW = "24h"


def _delivery_log(**filters: str) -> str:
    url = reverse("admin:notifications_delivery_changelist")
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return f"{url}?{query}" if query else url


def _count(n: int) -> str:
    return f"{dashboard.COUNT_CAP:,}+" if n > dashboard.COUNT_CAP else f"{n:,}"


# ---------------------------------------------------------------------------------------- sends


@console.panel(
    key="notifications.sends",
    title="Sends",
    order=10,
    width="full",
    template="admin/notifications/console/sends.html",
    permission="notifications.view_delivery",
    link=_delivery_log,
    link_text="Delivery log",
)
def sends_panel(request: HttpRequest) -> dict[str, Any]:
    rows = dashboard.sends_by_day(days=7)
    today = timezone.localdate()
    days = [today - dt.timedelta(days=n) for n in range(6, -1, -1)]
    by_status: dict[str, dict[dt.date, int]] = defaultdict(lambda: defaultdict(int))
    by_channel: dict[str, dict[dt.date, int]] = defaultdict(lambda: defaultdict(int))
    today_table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        by_status[row.status][row.day] += row.count
        by_channel[row.channel][row.day] += row.count
        if row.day == today:
            today_table[row.channel][row.status] += row.count
    total = sum(r.count for r in rows)
    failed = sum(r.count for r in rows if r.status == "failed")
    today_total = sum(sum(c.values()) for c in today_table.values())
    today_failed = sum(c["failed"] for c in today_table.values())
    statuses = [s for s in STATUS_ORDER if s in by_status]
    channels = [c for c in CHANNEL_LABELS if c in by_channel]
    labels = [date_format(d, "D j") for d in days]
    return {
        "empty": total == 0,
        "kpis": [
            {"label": "Today", "value": f"{today_total:,}", "note": f"{today_failed:,} failed"},
            {"label": "Last 7 days", "value": f"{total:,}", "note": f"{failed:,} failed"},
            {
                "label": "Failure rate, 7 days",
                "value": f"{100 * failed / total:.1f} %" if total else "—",
                "note": "failed deliveries / all",
                "href": _delivery_log(status__exact="failed"),
            },
        ],
        "by_status": json.dumps(
            {
                "labels": labels,
                "datasets": [
                    {
                        "label": status,
                        "data": [by_status[status][d] for d in days],
                        "backgroundColor": STATUS_COLORS.get(status, "#94a3b8"),
                    }
                    for status in statuses
                ],
            }
        ),
        "by_channel": json.dumps(
            {
                "labels": labels,
                "datasets": [
                    {
                        "label": CHANNEL_LABELS[channel],
                        "data": [by_channel[channel][d] for d in days],
                        "backgroundColor": CHANNEL_COLORS.get(channel, "#94a3b8"),
                    }
                    for channel in channels
                ],
            }
        ),
        "options": CHART_OPTIONS,
        "today": {
            "statuses": statuses,
            "rows": [
                {
                    "channel": CHANNEL_LABELS[channel],
                    "href": _delivery_log(channel__exact=channel),
                    "counts": [today_table[channel][s] for s in statuses],
                    "total": sum(today_table[channel].values()),
                }
                for channel in channels
                if channel in today_table
            ],
        },
    }


# ------------------------------------------------------------------------------ provider health


def provider_rows(*, since: dt.datetime) -> list[dict[str, Any]]:
    """One row per (channel, provider): each channel's chain in order, then whatever else was
    called since ``since`` (a provider since removed, a push to several kinds of device)."""
    stats = {(s.channel, s.provider): s for s in dashboard.provider_stats(since=since)}
    rows = []
    for channel in PROVIDER_CHANNELS:
        for position, provider in enumerate(registry.chain(channel), 1):
            found = stats.pop((channel, provider.alias), None)
            rows.append(_provider_row(channel, provider.alias, position, found))
    for (channel, alias), found in sorted(stats.items()):
        rows.append(_provider_row(channel, alias, None, found))
    return rows


def _provider_row(
    channel: str, alias: str, position: int | None, stats: dashboard.ProviderStats | None
) -> dict[str, Any]:
    # The outbox and a push to several kinds of device ("fcm+webpush") have no breaker.
    breaker = (
        services.provider_breaker(alias).state()
        if alias in settings.NOTIFICATION_PROVIDERS and alias != "outbox"
        else None
    )
    rate = stats.success_rate if stats else None
    return {
        "channel": CHANNEL_LABELS.get(channel, channel),
        "position": position,
        "provider": alias,
        "breaker": breaker,
        "calls": stats.calls if stats else 0,
        "success_rate": rate,
        "success": f"{100 * rate:.1f} %" if rate is not None else "—",
        "p95": f"{stats.p95_ms:,.0f} ms" if stats and stats.p95_ms is not None else "—",
        "last_error": stats.last_error if stats else "",
        "last_error_at": stats.last_error_at if stats else None,
    }


def provider_table(rows: list[dict[str, Any]], *, chain: bool) -> dict[str, Any]:
    """The rows as a console table; ``chain`` adds each provider's place in its chain."""
    cell = console.cell
    headers = ["Channel", "Provider", "Circuit", "Calls", "Success", "p95 latency", "Last error"]
    if chain:
        headers.insert(1, "#")
    out = []
    for r in rows:
        rate = r["success_rate"]
        cells = [
            r["channel"],
            cell(r["provider"], strong=True),
            cell(r["breaker"].replace("_", "-"), badge=BREAKER_BADGES[r["breaker"]])
            if r["breaker"]
            else cell("—", tone="muted", title="no circuit breaker"),
            f"{r['calls']:,}",
            cell(r["success"], tone="danger" if rate is not None and rate < 0.9 else ""),
            r["p95"],
            cell(
                r["last_error"],
                truncate=True,
                title=f"{r['last_error']} ({console.age(r['last_error_at'])} ago)",
            )
            if r["last_error"]
            else cell("—", tone="muted"),
        ]
        if chain:
            cells.insert(1, cell(r["position"] or "—", tone="muted", title="place in the chain"))
        out.append(cells)
    return console.table(headers, out, empty="No provider is configured.")


@console.panel(
    key="notifications.providers",
    title="Provider health, last 24 hours",
    order=20,
    width="full",
    permission="notifications.view_delivery",
    link=lambda: reverse("admin:notifications_provider_health"),
    link_text="Provider health",
)
def providers_panel(request: HttpRequest) -> dict[str, Any]:
    since = timezone.now() - dt.timedelta(hours=HEALTH_WINDOWS[DASHBOARD_WINDOW][1])
    return provider_table(provider_rows(since=since), chain=False)


def provider_health(model_admin: Any, request: HttpRequest) -> TemplateResponse:
    window = request.GET.get("window", "1h")
    if window not in HEALTH_WINDOWS:
        window = "1h"
    label, hours = HEALTH_WINDOWS[window]
    rows = provider_rows(since=timezone.now() - dt.timedelta(hours=hours))
    context = {
        **model_admin.admin_site.each_context(request),
        # No ``opts``: unfold's header then shows the title, not the delivery log's breadcrumbs.
        "title": "Provider health",
        "subtitle": label,
        "table": provider_table(rows, chain=True),
        "window": window,
        "windows": [(key, name) for key, (name, _) in HEALTH_WINDOWS.items()],
        "breaker_threshold": settings.PROVIDER_BREAKER_THRESHOLD,
        "breaker_reset": settings.PROVIDER_BREAKER_RESET_SECONDS,
    }
    return TemplateResponse(request, "admin/notifications/provider_health.html", context)


# -------------------------------------------------------------------------------------- backlog


@console.panel(
    key="notifications.backlog",
    title="Backlog",
    order=30,
    width="third",
    template="admin/notifications/console/backlog.html",
    permission="notifications.view_delivery",
    link=lambda: _delivery_log(status__exact="queued"),
    link_text="Queued deliveries",
)
def backlog_panel(request: HttpRequest) -> dict[str, Any]:
    waiting = dashboard.backlog()
    lengths = dashboard.broker_queue_lengths()
    return {
        "queued": _count(waiting.queued),
        "oldest": console.age(waiting.oldest_queued_at) if waiting.oldest_queued_at else "",
        "queues": [
            {"name": name, "length": "unknown" if n is None else f"{n:,}", "unknown": n is None}
            for name, n in lengths.items()
        ],
        "broker_down": all(n is None for n in lengths.values()),
    }


# ------------------------------------------------------------------------------------- failures


@console.panel(
    key="notifications.failures",
    title="Failures, last 24 hours",
    order=40,
    width="two_thirds",
    permission="notifications.view_delivery",
    link=lambda: _delivery_log(status__exact="failed"),
    link_text="Failed deliveries",
)
def failures_panel(request: HttpRequest) -> dict[str, Any]:
    # The last day, as provider health: what is going wrong now (the week's count is a figure
    # of the sends panel).
    since = timezone.now() - dt.timedelta(hours=24)
    cell = console.cell
    return console.table(
        ["Reason", "Channel", "Failures", "Last"],
        [
            [
                cell(r.reason or "unspecified", strong=True),
                cell(
                    CHANNEL_LABELS.get(r.channel, r.channel),
                    href=_delivery_log(status__exact="failed", channel__exact=r.channel),
                ),
                f"{r.count:,}",
                cell(f"{console.age(r.last_at)} ago", tone="muted"),
            ]
            for r in dashboard.failure_reasons(since=since)
        ],
        empty="No delivery failed in the last 24 hours.",
    )


# ------------------------------------------------------------------------------------ due soon


@console.panel(
    key="notifications.due_soon",
    title="Scheduled in the next hour",
    order=60,
    width="half",
    permission="notifications.view_delivery",
    link=lambda: _delivery_log(status__exact="scheduled"),
    link_text="All scheduled",
)
def due_soon_panel(request: HttpRequest) -> dict[str, Any]:
    now = timezone.now()
    first, total = dashboard.due_soon(within=dt.timedelta(hours=1))
    cell = console.cell
    rows = []
    for d in first:
        when = d.scheduled_for or now
        overdue = when <= now
        rows.append(
            [
                cell(
                    date_format(timezone.localtime(when), "H:i"),
                    href=reverse("admin:notifications_delivery_change", args=[d.pk]),
                    strong=True,
                ),
                cell(
                    f"overdue {console.age(when, now)}"
                    if overdue
                    else f"in {console.age(when, now)}",
                    tone="danger" if overdue else "muted",
                ),
                CHANNEL_LABELS.get(d.channel, d.channel),
                d.notification.category_id,
                cell(d.address or "—", truncate=bool(d.address)),
            ]
        )
    if total > dashboard.COUNT_CAP:
        footer = f"{dashboard.COUNT_CAP:,}+ due in the next hour in all."
    elif total > len(first):
        footer = f"And {total - len(first):,} more."
    else:
        footer = ""
    return console.table(
        ["Due", "", "Channel", "Category", "To"],
        rows,
        empty="Nothing is scheduled for the next hour.",
        footer=footer,
    )
