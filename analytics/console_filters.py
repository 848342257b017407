"""The analytics pages' filters (a GET form): a range (the last 24 hours, 7, 30 or 90 days, or
from one day to another), a channel and a category, turned into the UTC window and granularity
the rollups are read at.

Buckets are UTC (the rollups' own); a custom range's days are UTC days, both included.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS
from django.utils import timezone
from unfold.widgets import BASE_INPUT_CLASSES, UnfoldAdminSelectWidget

from analytics.models import Granularity
from communication.models import Category

RANGES = {
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "custom": "From … to …",
}
DEFAULT_RANGE = "7d"
RANGE_DAYS = {"7d": 7, "30d": 30, "90d": 90}
# A custom range of up to this many days is read per hour; longer ones per day.
HOURLY_UP_TO_DAYS = 2
# The longest custom range: a year of daily buckets is as much as a chart can show.
MAX_DAYS = 366


# A choice that re-renders the page at once (analytics/console/charts.js submits the form).
AUTOSUBMIT = {"data-autosubmit": "1"}


@dataclass(frozen=True)
class Window:
    start: dt.datetime  # inclusive, UTC
    end: dt.datetime  # exclusive, UTC
    granularity: str
    label: str

    def buckets(self) -> list[dt.datetime]:
        step = dt.timedelta(hours=1) if self.granularity == Granularity.HOUR else dt.timedelta(1)
        out, at = [], self.start
        while at < self.end:
            out.append(at)
            at += step
        return out


def _utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


class RangeForm(forms.Form):
    """The range alone (the report pages); ``from`` and ``to`` are Python keywords, hence the
    fields added below the class."""

    range = forms.ChoiceField(
        choices=list(RANGES.items()), required=False, widget=UnfoldAdminSelectWidget
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("from"), data.get("to")
        chosen = data.get("range") or ("custom" if start or end else DEFAULT_RANGE)
        data["range"] = chosen
        if self.errors:
            return data
        if chosen == "custom":
            if start is None or end is None:
                raise forms.ValidationError(
                    "A custom range needs both days, from and to.", code="incomplete_range"
                )
            if end < start:
                raise forms.ValidationError(
                    "The range ends before it starts: “to” must be on or after “from”.",
                    code="reversed_range",
                )
            if (end - start).days + 1 > MAX_DAYS:
                raise forms.ValidationError(
                    f"The range is longer than {MAX_DAYS} days: choose a shorter one.",
                    code="range_too_long",
                )
        return data

    def window(self, now: dt.datetime | None = None) -> Window:
        """The UTC window the (valid) form chose."""
        now = (now or timezone.now()).astimezone(dt.UTC)
        chosen = self.cleaned_data["range"]
        if chosen == "24h":
            end = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
            return Window(end - dt.timedelta(hours=24), end, Granularity.HOUR, RANGES[chosen])
        if chosen in RANGE_DAYS:
            end = _utc_midnight(now.date() + dt.timedelta(days=1))
            start = end - dt.timedelta(days=RANGE_DAYS[chosen])
            return Window(start, end, Granularity.DAY, RANGES[chosen])
        first, last = self.cleaned_data["from"], self.cleaned_data["to"]
        days = (last - first).days + 1
        granularity = Granularity.HOUR if days <= HOURLY_UP_TO_DAYS else Granularity.DAY
        label = f"{first:%d %b %Y}" if days == 1 else f"{first:%d %b %Y} to {last:%d %b %Y}"
        return Window(
            _utc_midnight(first), _utc_midnight(last + dt.timedelta(days=1)), granularity, label
        )

    def error_messages(self) -> list[str]:
        """Each problem as a sentence naming the field it is about."""
        out = []
        for name, errors in self.errors.items():
            for error in errors:
                if name == NON_FIELD_ERRORS:
                    out.append(str(error))
                else:
                    out.append(f"{self[name].label}: {error}")
        return out


def _day(label: str) -> forms.DateField:
    widget = forms.DateInput(
        format="%Y-%m-%d", attrs={"type": "date", "class": " ".join(BASE_INPUT_CLASSES)}
    )
    return forms.DateField(label=label, required=False, widget=widget)


RangeForm.base_fields["from"] = _day("From")
RangeForm.base_fields["to"] = _day("To (included)")


class DashboardFilters(RangeForm):
    """The dashboard's filters: the range, a channel and a category (any, when blank)."""

    channel = forms.ChoiceField(required=False, widget=UnfoldAdminSelectWidget(AUTOSUBMIT))
    category = forms.ChoiceField(required=False, widget=UnfoldAdminSelectWidget(AUTOSUBMIT))

    def __init__(self, *args: Any, categories: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        channels = [(c, c.replace("_", "-")) for c in Category.CHANNELS]
        # ChoiceField's choices are set per request (the categories are rows).
        self.fields["channel"].choices = [("", "All channels"), *channels]  # type: ignore[attr-defined]
        self.fields["category"].choices = [("", "All categories"), *categories]  # type: ignore[attr-defined]


def category_choices() -> list[tuple[str, str]]:
    """The categories staff may filter on (one query)."""
    return [(key, name) for key, name in Category.objects.values_list("key", "name")]
