"""The staff console's analytics pages: the dashboard (delivery over time, providers' success and
latency, the engagement funnel, cost) and a report per template and per campaign (counts and
rates over time, per step and variant, and the A/B result).

Reads go through ``analytics.selectors`` (the rollups) and ``analytics.stats``; this module
validates the filters and shapes the answers into Chart.js data and tables. The pages are
registered on the admin site (``analytics.admin``), behind ``analytics.view_rollup``.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from analytics import selectors, stats
from analytics.console_filters import (
    DEFAULT_RANGE,
    RANGES,
    DashboardFilters,
    RangeForm,
    Window,
    category_choices,
)
from analytics.models import Granularity

PERMISSION = "analytics.view_rollup"
DASHBOARD_TEMPLATE = "admin/analytics/dashboard.html"
# A report shows the last 30 days unless asked otherwise.
REPORT_RANGE = "30d"
REPORT_TEMPLATE = "admin/analytics/report.html"

# The status colours of the console's sends chart (notifications.console), and engagement's own.
COLORS = {
    "sent": "#3b82f6",
    "delivered": "#16a34a",
    "failed": "#dc2626",
    "bounced": "#f97316",
    "opened": "#8b5cf6",
    "clicked": "#ec4899",
    "p50": "#93c5fd",
    "p95": "#3b82f6",
    "success": "#16a34a",
}
# One colour per provider or variant, in order of appearance.
PALETTE = ("#6366f1", "#14b8a6", "#f59e0b", "#ec4899", "#84cc16", "#0ea5e9", "#a855f7", "#64748b")
DELIVERY_STATUSES = ("sent", "delivered", "failed", "bounced")
FUNNEL = (
    ("sent", "Sent"),
    ("delivered", "Delivered"),
    ("opened", "Opened"),
    ("clicked", "Clicked"),
)
AB_TESTS = {"two_proportion_z": "two-proportion z-test", "chi_squared": "chi-squared test"}
METRICS = {"open": "opens", "click": "clicks"}
NO_PROVIDER = "no provider"


# ------------------------------------------------------------------------------------ formatting


def _percent(rate: float | None, digits: int = 1) -> str:
    return "—" if rate is None else f"{100 * rate:.{digits}f} %"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _money(value: Decimal | None, currency: str, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f} {currency}"


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _labels(window: Window) -> list[str]:
    buckets = window.buckets()
    if window.granularity == Granularity.DAY:
        return [f"{b:%d %b}" for b in buckets]
    several_days = buckets and buckets[0].date() != buckets[-1].date()
    return [f"{b:%d %b %H:00}" if several_days else f"{b:%H:00}" for b in buckets]


def _chart(labels: list[str], datasets: list[dict[str, Any]]) -> str:
    return json.dumps({"labels": labels, "datasets": datasets}, default=str)


def _dataset(label: str, data: list[Any], color: str, **extra: Any) -> dict[str, Any]:
    return {"label": label, "data": data, "backgroundColor": color, "borderColor": color, **extra}


def _colors(keys: Iterable[str]) -> dict[str, str]:
    return {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(keys)}


# ---------------------------------------------------------------------------------------- access


def _check(request: HttpRequest) -> None:
    # admin_view lets any staff member in; the figures need the analytics permission.
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied("Viewing analytics needs the analytics.view_rollup permission.")


def _page(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200):
    return TemplateResponse(
        request,
        template,
        {**admin.site.each_context(request), **context},
        status=status,
    )


def _with_range(request: HttpRequest, default: str) -> QueryDict:
    """The query, with ``default`` as its range when it names none (nor any day)."""
    query = request.GET.copy()
    if not any(query.get(key) for key in ("range", "from", "to")):
        query["range"] = default
    return query


def _query(request: HttpRequest, **changes: str) -> str:
    """The page's query string with ``changes`` (a blank value drops the parameter)."""
    params = request.GET.copy()
    for key, value in changes.items():
        if value:
            params[key] = value
        else:
            params.pop(key, None)
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


# ------------------------------------------------------------------------------------- dashboard


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """``/admin/analytics/dashboard/``: the figures of a range, for a channel and a category."""
    _check(request)
    # An empty query is the defaults' (bound, so that the form shows them chosen).
    form = DashboardFilters(_with_range(request, DEFAULT_RANGE), categories=category_choices())
    context: dict[str, Any] = {"title": "Analytics", "form": form, "ranges": RANGES}
    if not form.is_valid():
        context["errors"] = form.error_messages()
        return _page(request, DASHBOARD_TEMPLATE, context, status=400)
    window = form.window()
    filters = selectors.Filters(
        channel=form.cleaned_data["channel"] or None,
        category=form.cleaned_data["category"] or None,
    )
    context.update(dashboard_data(window, filters))
    context["subtitle"] = window.label + " · UTC"
    return _page(request, DASHBOARD_TEMPLATE, context)


def dashboard_data(window: Window, filters: selectors.Filters) -> dict[str, Any]:
    """The dashboard's figures and charts for ``window`` (three queries: the series by provider,
    then the providers' counters and histograms)."""
    report = selectors.delivery_report(
        start=window.start,
        end=window.end,
        granularity=window.granularity,
        group_by=("provider",),
        filters=filters,
    )
    performance = selectors.performance_report(
        start=window.start, end=window.end, group_by=("channel", "provider"), filters=filters
    )
    currency = report["currency"]
    totals = report["totals"]
    buckets = window.buckets()
    labels = _labels(window)
    index = {b: i for i, b in enumerate(buckets)}

    by_status = {status: [0] * len(buckets) for status in DELIVERY_STATUSES}
    cost_by_provider: dict[str, list[float]] = {}
    provider_cost: dict[str, Decimal] = defaultdict(Decimal)
    provider_sent: dict[str, int] = defaultdict(int)
    for item in report["series"]:
        i = index.get(item["bucket"])
        provider = item["group"]["provider"] or NO_PROVIDER
        provider_cost[provider] += item["cost"]
        provider_sent[provider] += item["sent"]
        if i is None:
            continue
        for status in DELIVERY_STATUSES:
            by_status[status][i] += item[status]
        cost_by_provider.setdefault(provider, [0.0] * len(buckets))[i] += float(item["cost"])

    colors = _colors(sorted(cost_by_provider))
    funnel = [totals[key] for key, _ in FUNNEL]
    providers = _provider_rows(performance["groups"])
    spent = [p for p in sorted(provider_cost, key=lambda p: -provider_cost[p]) if provider_cost[p]]
    return {
        "empty": not report["series"],
        "currency": currency,
        "kpis": _kpis(totals, currency),
        # What became of the sends as stacked bars, the sends themselves as a line over them:
        # stacking "sent" on its own outcomes would count each message twice.
        "delivery_chart": _chart(
            labels,
            [
                _dataset("sent", by_status["sent"], COLORS["sent"], type="line", order=0),
                *(
                    _dataset(status, by_status[status], COLORS[status], stack="outcome", order=1)
                    for status in DELIVERY_STATUSES[1:]
                ),
            ],
        ),
        "funnel_chart": _chart(
            [name for _, name in FUNNEL],
            [
                _dataset(
                    "unique deliveries",
                    funnel,
                    [COLORS[key] for key, _ in FUNNEL],  # type: ignore[arg-type]
                )
            ],
        ),
        "funnel": [
            {
                "name": name,
                "count": f"{count:,}",
                "of_sent": _percent(_rate(count, funnel[0])),
                "of_previous": _percent(_rate(count, funnel[i - 1])) if i else "",
            }
            for i, ((_, name), count) in enumerate(zip(FUNNEL, funnel, strict=True))
        ],
        "cost_chart": _chart(
            labels,
            [
                _dataset(provider, [round(v, 6) for v in values], colors[provider], stack="cost")
                for provider, values in sorted(cost_by_provider.items())
                if provider_cost[provider]
            ],
        ),
        "cost_total": _money(totals["cost"], currency),
        "cost_rows": [
            {
                "provider": provider,
                "sent": f"{provider_sent[provider]:,}",
                "cost": _money(provider_cost[provider], currency),
                "per_message": _money(
                    provider_cost[provider] / provider_sent[provider]
                    if provider_sent[provider]
                    else None,
                    currency,
                    digits=4,
                ),
            }
            for provider in spent
        ],
        "providers": providers,
        "success_chart": _chart(
            [p["label"] for p in providers],
            [
                _dataset(
                    "success rate",
                    [round(100 * p["success_rate"], 2) if p["calls"] else None for p in providers],
                    COLORS["success"],
                )
            ],
        ),
        "latency_chart": _chart(
            [p["label"] for p in providers],
            [
                _dataset("p50", [p["p50_ms"] for p in providers], COLORS["p50"]),
                _dataset("p95", [p["p95_ms"] for p in providers], COLORS["p95"]),
            ],
        ),
    }


def _kpis(totals: dict[str, Any], currency: str) -> list[dict[str, str]]:
    rates = totals["rates"]
    return [
        {
            "key": "sent",
            "label": "Sent",
            "value": f"{totals['sent']:,}",
            "note": "accepted by a provider",
        },
        {
            "key": "delivered",
            "label": "Delivered",
            "value": f"{totals['delivered']:,}",
            "note": f"{_percent(rates['delivered'])} of sent",
        },
        {
            "key": "failed",
            "label": "Failed",
            "value": f"{totals['failed']:,}",
            "note": f"{_percent(rates['failed'])} of attempts",
        },
        {
            "key": "bounced",
            "label": "Bounced",
            "value": f"{totals['bounced']:,}",
            "note": f"{_percent(rates['bounced'])} of sent",
        },
        {
            "key": "opened",
            "label": "Opened",
            "value": f"{totals['opened']:,}",
            "note": f"{_percent(rates['opened'])} of sent, unique",
        },
        {
            "key": "clicked",
            "label": "Clicked",
            "value": f"{totals['clicked']:,}",
            "note": f"{_percent(rates['clicked'])} of sent, unique",
        },
        {
            "key": "cost",
            "label": "Cost",
            "value": _money(totals["cost"], currency),
            "note": f"{_money(totals['cost'] / totals['sent'], currency, 4) if totals['sent'] else '—'} per message",
        },
        {
            # Sends repeated after a worker died during the provider call (counted in Sent
            # too): last, a sign of trouble rather than a step from sent to clicked.
            "key": "possibly_duplicate",
            "label": "Possibly duplicate",
            "value": f"{totals['possibly_duplicate']:,}",
            "note": f"{_percent(rates['possibly_duplicate'], 2)} of sent, re-sent after a crash",
        },
    ]


def _provider_rows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        provider = g["group"]["provider"]
        if provider is None and not g["provider_calls"]:
            continue  # in-app and the like: delivered without a provider call
        calls, errors = g["provider_calls"], g["provider_errors"]
        latency = g["latency_ms"]
        channel = g["group"]["channel"] or ""
        rows.append(
            {
                "label": f"{provider or NO_PROVIDER} ({channel})" if channel else provider,
                "channel": channel.replace("_", "-"),
                "provider": provider or NO_PROVIDER,
                "calls": calls,
                "calls_text": f"{calls:,}",
                "errors": f"{errors:,}",
                "sent": f"{g['sent']:,}",
                "possibly_duplicate": f"{g['possibly_duplicate']:,}",
                "success_rate": 1 - errors / calls if calls else 0.0,
                "success": _percent(1 - errors / calls) if calls else "—",
                "low": bool(calls) and errors / calls > 0.1,
                "p50_ms": round(latency["p50"], 1) if latency["p50"] is not None else None,
                "p95_ms": round(latency["p95"], 1) if latency["p95"] is not None else None,
                "p50": _ms(latency["p50"]),
                "p95": _ms(latency["p95"]),
            }
        )
    rows.sort(key=lambda r: (r["channel"], -r["calls"], r["provider"]))
    return rows


# --------------------------------------------------------------------------------------- reports


def template_report_view(request: HttpRequest, key: str) -> HttpResponse:
    """``/admin/analytics/report/template/<key>/``: one template family's sends and engagement,
    per variant, with the A/B result."""
    _check(request)
    return _report(
        request,
        title=f"Template {key}",
        filters=selectors.Filters(template=key),
        steps=False,
        back=(
            reverse("admin:templates_app_template_changelist") + f"?q={key}",
            "The template",
        ),
    )


def campaign_report_view(request: HttpRequest, campaign: uuid.UUID) -> HttpResponse:
    """``/admin/analytics/report/campaign/<uuid>/``: one campaign's sends and engagement, per
    step and variant, with each step's A/B result."""
    _check(request)
    return _report(
        request,
        title=f"Campaign {campaign}",
        filters=selectors.Filters(campaign=campaign),
        steps=True,
        back=None,
    )


def _report(
    request: HttpRequest,
    *,
    title: str,
    filters: selectors.Filters,
    steps: bool,
    back: tuple[str, str] | None,
) -> HttpResponse:
    form = RangeForm(_with_range(request, REPORT_RANGE))
    metric = request.GET.get("metric", "open")
    context: dict[str, Any] = {
        "title": title,
        "form": form,
        "back": back,
        "metric": metric,
        "metrics": [
            {"key": k, "name": name, "href": _query(request, metric=k)}
            for k, name in METRICS.items()
        ],
    }
    errors = [] if form.is_valid() else form.error_messages()
    if metric not in METRICS:
        errors.append(f"Metric: {metric!r} is not one of {', '.join(METRICS)}.")
    if errors:
        context["errors"] = errors
        return _page(request, REPORT_TEMPLATE, context, status=400)
    window = form.window()
    context["subtitle"] = window.label + " · UTC"
    context.update(report_data(window, filters, steps=steps, metric=metric))
    return _page(request, REPORT_TEMPLATE, context)


def report_data(
    window: Window, filters: selectors.Filters, *, steps: bool, metric: str
) -> dict[str, Any]:
    """A template's or campaign's figures (two queries: the series, the engagement by step and
    variant)."""
    group_by = ("step", "variant") if steps else ("variant",)
    report = selectors.delivery_report(
        start=window.start,
        end=window.end,
        granularity=window.granularity,
        group_by=("variant",),
        filters=filters,
    )
    engagement = selectors.engagement_report(
        start=window.start, end=window.end, group_by=group_by, filters=filters, metric=metric
    )
    buckets = window.buckets()
    labels = _labels(window)
    index = {b: i for i, b in enumerate(buckets)}
    counts = {key: [0] * len(buckets) for key in ("sent", "delivered", "opened", "clicked")}
    for item in report["series"]:
        i = index.get(item["bucket"])
        if i is not None:
            for key, values in counts.items():
                values[i] += item[key]
    opened_rate = [_round_pct(o, s) for o, s in zip(counts["opened"], counts["sent"], strict=True)]
    clicked_rate = [
        _round_pct(c, s) for c, s in zip(counts["clicked"], counts["sent"], strict=True)
    ]

    success = "opened" if metric == "open" else "clicked"
    rows = [_engagement_row(g, steps=steps) for g in engagement["groups"]]
    rows.sort(key=lambda r: (r["step"], r["variant"]))
    tests: list[dict[str, Any]] = []
    if steps:
        by_step: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        for g in engagement["groups"]:
            if g["group"]["variant"]:
                step = str(g["group"]["step"] or "")
                by_step[step].append((g["group"]["variant"], g["sent"], g[success]))
        for step, variants in sorted(by_step.items()):
            result = stats.ab_test(variants)
            if result is not None:
                heading = f"Step {_short(step)}" if step else "Without a step"
                tests.append(_ab(result, heading=heading) | {"step": step})
    elif engagement["ab"] is not None:
        tests.append(_ab(engagement["ab"], heading="Variants"))

    totals = engagement["totals"]
    return {
        "empty": not report["series"] and not engagement["groups"],
        "kpis": [
            {"key": "sent", "label": "Sent", "value": f"{totals['sent']:,}", "note": ""},
            {
                "key": "delivered",
                "label": "Delivered",
                "value": f"{totals['delivered']:,}",
                "note": f"{_percent(_rate(totals['delivered'], totals['sent']))} of sent",
            },
            {
                "key": "opened",
                "label": "Opened",
                "value": f"{totals['opened']:,}",
                "note": f"{_percent(totals['rates']['open'])} of sent, unique",
            },
            {
                "key": "clicked",
                "label": "Clicked",
                "value": f"{totals['clicked']:,}",
                "note": f"{_percent(totals['rates']['click'])} of sent, unique",
            },
            {
                "key": "unsubscribed",
                "label": "Unsubscribed",
                "value": f"{totals['unsubscribed']:,}",
                "note": f"{_percent(totals['rates']['unsubscribe'], 2)} of sent",
            },
        ],
        "counts_chart": _chart(
            labels,
            [_dataset(key, values, COLORS[key], fill=False) for key, values in counts.items()],
        ),
        "rates_chart": _chart(
            labels,
            [
                _dataset("open rate", opened_rate, COLORS["opened"], spanGaps=True),
                _dataset("click rate", clicked_rate, COLORS["clicked"], spanGaps=True),
            ],
        ),
        "rows": rows,
        "steps": steps,
        "tests": tests,
        "metric_name": METRICS[metric],
    }


def _short(step_id: str) -> str:
    # Steps are ids until the Campaigns issue names them: the first block tells them apart.
    return step_id.split("-", maxsplit=1)[0] + "…" if step_id else ""


def _round_pct(numerator: int, denominator: int) -> float | None:
    return round(100 * numerator / denominator, 2) if denominator else None


def _engagement_row(g: dict[str, Any], *, steps: bool) -> dict[str, Any]:
    rates = g["rates"]
    return {
        "step": str(g["group"].get("step") or "") if steps else "",
        "step_short": _short(str(g["group"].get("step") or "")) if steps else "",
        "variant": g["group"]["variant"] or "",
        "sent": f"{g['sent']:,}",
        "delivered": f"{g['delivered']:,}",
        "opened": f"{g['opened']:,}",
        "clicked": f"{g['clicked']:,}",
        "unsubscribed": f"{g['unsubscribed']:,}",
        "open_rate": _percent(rates["open"]),
        "click_rate": _percent(rates["click"]),
        "click_to_open": _percent(rates["click_to_open"]),
    }


def _ab(result: dict[str, Any], *, heading: str) -> dict[str, Any]:
    lo, hi = result["diff_ci"]
    best, worst = result["diff_between"]
    confidence = f"{100 * (1 - result['alpha']):.0f} %"
    return {
        "heading": heading,
        "test": AB_TESTS.get(result["test"], result["test"]),
        "p_value": f"{result['p_value']:.4f}" if result["p_value"] >= 0.0001 else "< 0.0001",
        "significant": result["significant"],
        "confidence": confidence,
        "verdict": (
            f"{best} beats {worst}: significant at {confidence}"
            if result["significant"]
            else f"Not significant at {confidence}"
        ),
        "diff": f"{100 * result['diff']:+.2f} pts",
        "diff_between": f"{best} - {worst}",
        "diff_ci": f"[{100 * lo:+.2f}, {100 * hi:+.2f}] pts",
        "needed": (
            f"{result['needed_per_variant']:,} per variant"
            if result["needed_per_variant"]
            else ("—" if result["significant"] else "no difference to detect")
        ),
        "variants": [
            {
                "key": v["key"],
                "sent": f"{v['sent']:,}",
                "successes": f"{v['successes']:,}",
                "rate": _percent(v["rate"], 2),
                "ci": f"{_percent(v['ci'][0], 2)} to {_percent(v['ci'][1], 2)}",
            }
            for v in result["variants"]
        ],
    }


# ------------------------------------------------------------------------------------------ urls


def urls(
    wrap: Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]],
) -> list[URLPattern]:
    """The pages' routes under the admin site, each view wrapped by ``wrap`` (the site's
    ``admin_view``: staff only, never cached)."""
    return [
        path("analytics/dashboard/", wrap(dashboard_view), name="analytics_dashboard"),
        path(
            "analytics/report/template/<str:key>/",
            wrap(template_report_view),
            name="analytics_template_report",
        ),
        path(
            "analytics/report/campaign/<uuid:campaign>/",
            wrap(campaign_report_view),
            name="analytics_campaign_report",
        ),
    ]
