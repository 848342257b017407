"""The Templates panel of the staff console's dashboard: versions waiting for a reviewer."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from communication import console
from templates_app import selectors
from templates_app.models import VersionStatus


def _pending_list() -> str:
    url = reverse("admin:templates_app_templateversion_changelist")
    return f"{url}?status__exact={VersionStatus.PENDING}"


@console.panel(
    key="templates.awaiting_approval",
    title="Awaiting approval",
    order=50,
    width="half",
    permission="templates_app.view_templateversion",
    link=_pending_list,
    link_text="All pending versions",
)
def awaiting_approval_panel(request: HttpRequest) -> dict[str, Any]:
    versions, total = selectors.versions_awaiting_approval()
    cell = console.cell
    rows = [
        [
            cell(
                version,
                href=reverse("admin:templates_app_templateversion_change", args=[version.pk]),
                strong=True,
            ),
            version.template.name,
            cell(version.submitted_by or "—", truncate=True),
            cell(
                console.age(version.submitted_at) if version.submitted_at else "—",
                tone="muted",
            ),
        ]
        for version in versions
    ]
    more = total - len(versions)
    return console.table(
        ["Version", "Template", "Submitted by", "Waiting"],
        rows,
        empty="No version is waiting for approval.",
        footer=f"And {more} more." if more > 0 else "",
    )
