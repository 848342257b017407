"""One-click unsubscribe (RFC 8058): signed links, the headers that carry them, and what they do.

``PUBLIC_BASE_URL/u/<token>``: GET shows a confirmation page, POST (from the page, or the mail
client's one-click ``List-Unsubscribe=One-Click`` POST) records the change: for a user, the
category is turned off on that channel; for a raw address, the address is suppressed.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from django.conf import settings
from django.core import signing

SALT = "notifications.unsubscribe"


class TokenPayload(TypedDict):
    """What a signed unsubscribe link carries (short keys: the token is in every email)."""

    d: str  # delivery id
    c: str  # category key
    ch: str  # channel
    a: str  # address
    u: NotRequired[str]  # user id, when the notification has a user


def token_for(delivery) -> str:
    notification = delivery.notification
    payload: TokenPayload = {
        "d": str(delivery.id),
        "c": notification.category_id,
        "ch": delivery.channel,
        "a": delivery.address,
    }
    if notification.user_id:
        payload["u"] = str(notification.user_id)
    return signing.dumps(payload, salt=SALT, compress=True)


def read_token(token: str) -> TokenPayload | None:
    try:
        return signing.loads(token, salt=SALT, max_age=60 * 60 * 24 * 365)
    except signing.BadSignature:
        return None


def url_for(delivery) -> str:
    return f"{settings.PUBLIC_BASE_URL}/u/{token_for(delivery)}"


def headers_for(delivery) -> dict:
    """List-Unsubscribe headers for non-mandatory categories (none for security, receipts …).

    The worker loads ``notification.category`` with the delivery (no query here)."""
    category = delivery.notification.category
    if category is None or category.mandatory:
        return {}
    return {
        "List-Unsubscribe": f"<{url_for(delivery)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
