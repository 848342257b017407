"""The tracking endpoints a recipient's mail client reaches: the open pixel and the click
redirect (no login, no session, no CSRF: the signed token is the only authority).

They are plain Django views, outside the API and so outside its rate limits
(``communication.api.throttling`` is a DRF throttle): a mail client fetches the pixel each time
the message is shown, and a link must always lead on.
"""

from __future__ import annotations

import base64
import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.http import require_http_methods

from analytics import tracking
from communication.api.input import nul_allowed
from communication.ratelimit import client_ip

logger = logging.getLogger(__name__)

# A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = "no-store, no-cache, must-revalidate, max-age=0, private"

NOT_FOUND_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Link not valid</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}
</style></head><body><h1>This link is not valid</h1>
<p>It may have expired. The message it came from still holds the address it pointed to.</p>
</body></html>"""


def _record(request: HttpRequest, token: tracking.TrackingToken) -> None:
    agent = request.META.get("HTTP_USER_AGENT", "")
    reason = tracking.machine_reason(
        user_agent=agent, ip=client_ip(request), method=request.method or "GET"
    )
    try:
        tracking.engagement_record(token, machine_reason=reason, user_agent=agent)
    except DatabaseError:
        # The recipient still gets the image or the page; the lost event is logged.
        logger.exception("tracking event not recorded", extra={"kind": token.kind})


@nul_allowed  # a token with a NUL is one more bad token: the same GIF
@require_http_methods(["GET", "HEAD"])
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    """``GET /t/o/<token>.gif``: always the same GIF, whatever the token (the answer tells
    nothing about it); an ``opened`` event for a valid one."""
    found = tracking.read_token(token, tracking.OPEN)
    if found is not None:
        _record(request, found)
    response = HttpResponse(PIXEL, content_type="image/gif")
    response["Cache-Control"] = NO_STORE
    response["Pragma"] = "no-cache"
    response["Expires"] = "0"
    return response


@require_http_methods(["GET", "HEAD"])
def click_redirect(request: HttpRequest, token: str) -> HttpResponse:
    """``GET /t/c/<token>``: 302 to exactly the URL the token signs, with a ``clicked`` event;
    404 for any other token (never a redirect anywhere else)."""
    found = tracking.read_token(token, tracking.CLICK)
    if found is None:
        response = HttpResponse(NOT_FOUND_PAGE, status=404)
        response["Cache-Control"] = NO_STORE
        return response
    _record(request, found)
    response = HttpResponseRedirect(found.url)
    response["Cache-Control"] = NO_STORE
    # The destination learns nothing of the token from the Referer.
    response["Referrer-Policy"] = "no-referrer"
    return response
