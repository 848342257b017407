"""The API's router: every route answers with and without a trailing slash.

A redirect to the slashed path would lose a POST body, so both spellings are served. DRF's
``trailing_slash`` accepts only ``'/'`` or ``''``; the optional slash is set after its checks.
"""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

# A canonical UUID, 8-4-4-4-12 hex digits: nothing else of that length reaches a view (where it
# would fail in the database), and no word (``unread``, ``read-all``) is taken for an id.
UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class OptionalSlashRouter(SimpleRouter):
    """A ``SimpleRouter`` whose routes end in ``/?``."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
