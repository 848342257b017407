"""Hot API endpoints served straight from the ASGI event loop to the request threads.

On ``POST /api/v1/notifications`` Django's request machinery (the WSGI bridge, ten
middleware, DRF's request, negotiation and response objects) cost the web process about as much
CPU as the send itself. A route registered here is answered by its handler instead: the body is
read on the event loop, then one hop to the thread pool that serves Django authenticates the
token (the same function DRF's authentication calls), checks the permission class the DRF view
declares, parses the JSON with DRF's parser and calls the handler, which calls the same service
function as the view. Errors go through the API's exception handler, so their status, code and
body are the view's.

Anything this path does not handle in exactly the view's way goes to Django untouched: other
methods, a request from a browser (``Origin``: CORS belongs to Django's middleware), a body that
is not plain ``application/json`` with a ``Content-Length``, an empty one, or one over
``DATA_UPLOAD_MAX_MEMORY_SIZE``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import request_finished, request_started
from rest_framework import exceptions
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer

from communication import errors
from communication.auth.authentication import authenticate_token, bearer_token
from communication.exceptions import TokenError
from communication.logging import request_id_var

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("communication.access")

_VALID_ID = re.compile(r"^[A-Za-z0-9\-_.:]{1,128}$")

# What Django's middleware and DRF add to every API answer (SecurityMiddleware, XFrameOptions,
# CorsMiddleware, the view's Allow); the parity test compares them with the view's.
_FIXED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"vary", b"origin"),  # CorsMiddleware's, replacing DRF's Accept
    (b"allow", b"POST, OPTIONS"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


@dataclass
class DirectRequest:
    """What a handler gets: the authenticated principal, the parsed JSON and the headers
    (lower-case names)."""

    user: object
    data: object
    headers: dict[str, str]


@dataclass
class Route:
    handler: Callable[[DirectRequest], tuple[int, object, dict[str, str]]]
    permission_class: type


_routes: dict[str, Route] = {}


def register(path: str, handler, *, permission_class) -> None:
    """Serves ``POST path`` with ``handler(request) -> (status, body, headers)``, behind
    ``permission_class`` (a DRF permission class, as the view declares it)."""
    _routes[path] = Route(handler, permission_class)


class _PermissionRequest:
    """The part of a DRF request that permission classes read."""

    def __init__(self, user):
        self.user = user


class DirectRoutes:
    """ASGI middleware: registered routes here, everything else to ``app``."""

    def __init__(self, app, executor):
        self.app = app
        self.executor = executor

    async def __call__(self, scope, receive, send):
        route = _routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            if key in headers:  # a repeated header: Django's way of joining it is Django's
                return await self.app(scope, receive, send)
            headers[key] = value.decode("latin-1")
        media, _, params = headers.get("content-type", "").partition(";")
        charset = params.strip().lower()
        length = headers.get("content-length", "")
        if (
            "origin" in headers
            or "transfer-encoding" in headers
            or media.strip().lower() != "application/json"
            or charset not in ("", "charset=utf-8")
            or not length.isdigit()
            or not 0 < int(length) <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        ):
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        loop = asyncio.get_running_loop()
        status, content, extra = await loop.run_in_executor(
            self.executor, _answer, route, scope["path"], headers, body
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *_FIXED_HEADERS,
                    (b"content-length", str(len(content)).encode()),
                    *((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


def _answer(route: Route, path: str, headers: dict, body: bytes) -> tuple[int, bytes, dict]:
    """Runs on a request thread: as Django would, with its request signals around it (they
    hand database connections back to the pool)."""
    incoming = headers.get("x-request-id", "")
    rid = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
    token = request_id_var.set(rid)
    started = time.perf_counter()
    request_started.send(sender=DirectRoutes)
    try:
        status, data, extra = _respond(route, headers, body)
        content = JSONRenderer().render(data)
        extra["X-Request-Id"] = rid
        access_logger.info(
            "%s %s %s",
            "POST",
            path,
            status,
            extra={
                "method": "POST",
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        return status, content, extra
    finally:
        request_finished.send(sender=DirectRoutes)
        request_id_var.reset(token)


def _respond(route: Route, headers: dict, body: bytes) -> tuple[int, object, dict]:
    try:
        header = headers.get("authorization")
        if not header:
            raise exceptions.NotAuthenticated()
        bearer = bearer_token(header)
        if bearer is None:
            raise TokenError("Authorization header must be 'Bearer <token>'")
        user, _claims = authenticate_token(bearer)
        permission = route.permission_class()
        if not permission.has_permission(_PermissionRequest(user), None):
            raise exceptions.PermissionDenied(
                getattr(permission, "message", None), getattr(permission, "code", None)
            )
        data = JSONParser().parse(io.BytesIO(body), "application/json", {})
        return route.handler(DirectRequest(user=user, data=data, headers=headers))
    except Exception as exc:
        response = errors.exception_handler(exc, {})
        if response is None:
            logger.exception("Internal Server Error")
            return 500, errors.error_body("server_error", "Internal server error."), {}
        extra = {k: v for k, v in response.items() if k.lower() != "content-type"}
        return response.status_code, response.data, extra
