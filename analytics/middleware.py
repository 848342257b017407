"""The HTTP metrics of every request, labelled by URL pattern rather than path."""

from __future__ import annotations

import functools
import logging
import re
import time

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import resolve

from analytics.metrics import HTTP_REQUEST_DURATION

logger = logging.getLogger(__name__)

# Where no pattern matched. Never the raw path: each distinct path would be a new series.
UNMATCHED = "unmatched"
STATIC = "static"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NAMED_GROUP = "(?P<"


@functools.lru_cache(maxsize=2048)
def route_label(route: str) -> str:
    """A URL pattern as a readable label: ``^u/(?P<token>[\\w:.\\-]+)/?$`` → ``u/<token>``;
    ``path()`` patterns stay as written (``admin/<path:object_id>/change/``)."""
    out: list[str] = []
    i = 0
    while i < len(route):
        if route.startswith(_NAMED_GROUP, i):
            name_end = route.index(">", i)
            depth, j = 0, i
            while j < len(route):
                char = route[j]
                if char == "\\":
                    j += 2
                    continue
                depth += char == "("
                depth -= char == ")"
                if depth == 0:
                    break
                j += 1
            out.append(f"<{route[i + len(_NAMED_GROUP) : name_end]}>")
            i = j + 1
        else:
            out.append(route[i])
            i += 1
    label = "".join(out).removeprefix("^").removesuffix("$").removesuffix("/?")
    label = re.sub(r"\\(.)", r"\1", label)
    return label or "/"


def _route(request: HttpRequest, status: int) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        # Answered by a middleware before the URL was resolved (static files, a refused NUL, a
        # CORS preflight) or by nothing at all (404).
        if request.path_info.startswith(settings.STATIC_URL or "/static/"):
            return STATIC
        if status == 404:
            return UNMATCHED
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Http404:
            return UNMATCHED
    return route_label(match.route)


class HttpMetricsMiddleware:
    """Times each request, outermost so that what the other middleware cost and refuse counts."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        try:
            status = response.status_code
            HTTP_REQUEST_DURATION.labels(
                _route(request, status),
                request.method if request.method in _METHODS else "other",
                f"{status // 100}xx",
            ).observe(elapsed)
        except Exception:  # a metric must never cost a request its answer
            logger.exception("HTTP metrics not recorded")
        return response
