"""What the Conversations pages share: how a person and a client's metadata are shown (exact
search and read-only pages come from ``communication.admin_tools``)."""

from __future__ import annotations

import json
from typing import Any

from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from communication.models import User


def person(user: User | None) -> str:
    """A user as staff recognise them: display name and user id (or the staff username)."""
    if user is None:
        return "—"
    ident = user.external_id or user.username
    return f"{user.name} ({ident})" if user.name and user.name != ident else ident


def metadata_list(data: Any) -> str:
    """A client's metadata as "key: value" lines rather than a JSON document; "—" when empty."""
    if not data:
        return "—"
    if not isinstance(data, dict):
        return json.dumps(data, ensure_ascii=False)
    return format_html_join(
        mark_safe("<br>"),
        "<strong>{}</strong>: {}",
        (
            (key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
            for key, value in data.items()
        ),
    )
