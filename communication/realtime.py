"""The websocket gateway at ``/ws/v1/`` and ``publish()``, the one way services reach it.

A client authenticates with the same JWT as the API: ``?token=`` on the URL or a first message
``{"type": "auth", "token": …}`` within ``WS_AUTH_TIMEOUT`` seconds (never a cookie). Everything
for a user goes to the group ``user.<uuid>``. Later issues add event types (notifications,
messages, receipts, typing, presence) and per-user sequence numbers with replay.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from communication.auth.authentication import authenticate_token
from communication.auth.tokens import ServicePrincipal
from communication.exceptions import TokenError

logger = logging.getLogger(__name__)

WS_AUTH_TIMEOUT = 10
CLOSE_AUTH_FAILED = 4401
CLOSE_FORBIDDEN = 4403


def user_group(user_pk) -> str:
    return f"user.{user_pk}"


def publish(user_pk, event: dict) -> None:
    """Sends ``event`` to every socket of the user once the current transaction commits."""

    def send():
        layer = get_channel_layer()
        async_to_sync(layer.group_send)(user_group(user_pk), {"type": "deliver", "event": event})

    transaction.on_commit(send)


class OriginAllowListValidator:
    """A browser's ``Origin`` must be on ``ALLOWED_ORIGINS``; no ``Origin`` (apps, services) passes,
    since the token, not the browser, carries the authority."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        origin = None
        for name, value in scope.get("headers", []):
            if name == b"origin":
                origin = value.decode("latin1")
        if origin is not None and not _origin_allowed(origin, scope):
            await send({"type": "websocket.close", "code": CLOSE_FORBIDDEN})
            return
        return await self.app(scope, receive, send)


def _origin_allowed(origin: str, scope) -> bool:
    allowed = set(settings.ALLOWED_ORIGINS)
    allowed.add(settings.PUBLIC_BASE_URL)
    return origin.rstrip("/") in {o.rstrip("/") for o in allowed}


@database_sync_to_async
def _authenticate(token: str):
    principal, _claims = authenticate_token(token)
    return principal


class GatewayConsumer(AsyncJsonWebsocketConsumer):
    user = None
    _auth_timer: asyncio.Task | None = None

    async def connect(self):
        await self.accept()
        token = parse_qs(self.scope.get("query_string", b"").decode()).get("token", [None])[0]
        if token:
            await self._login(token)
        else:
            self._auth_timer = asyncio.create_task(self._auth_deadline())

    async def _auth_deadline(self):
        await asyncio.sleep(WS_AUTH_TIMEOUT)
        if self.user is None:
            await self.send_json(
                {
                    "type": "error",
                    "code": "token_missing",
                    "detail": "Authenticate within 10 seconds.",
                }
            )
            await self.close(code=CLOSE_AUTH_FAILED)

    async def _login(self, token: str) -> bool:
        try:
            principal = await _authenticate(token)
        except TokenError as exc:
            await self.send_json({"type": "error", "code": exc.code, "detail": str(exc.detail)})
            await self.close(code=CLOSE_AUTH_FAILED)
            return False
        if isinstance(principal, ServicePrincipal):
            await self.send_json(
                {
                    "type": "error",
                    "code": "permission_denied",
                    "detail": "The gateway is for user tokens.",
                }
            )
            await self.close(code=CLOSE_FORBIDDEN)
            return False
        self.user = principal
        await self.channel_layer.group_add(user_group(principal.pk), self.channel_name)
        await self.send_json({"type": "ready", "user_id": principal.external_id})
        return True

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_json(
                {
                    "type": "error",
                    "code": "validation_error",
                    "detail": "Every message is an object with a 'type'.",
                }
            )
            return
        kind = content["type"]
        if self.user is None:
            if kind == "auth" and isinstance(content.get("token"), str):
                if self._auth_timer:
                    self._auth_timer.cancel()
                await self._login(content["token"])
                return
            await self.send_json(
                {
                    "type": "error",
                    "code": "token_missing",
                    "detail": "Send {'type': 'auth', 'token': …} first.",
                }
            )
            return
        if kind == "ping":
            await self.send_json({"type": "pong", "id": content.get("id")})
            return
        await self.send_json(
            {
                "type": "error",
                "code": "validation_error",
                "detail": f"Unknown message type {kind!r}.",
            }
        )

    async def deliver(self, message):
        await self.send_json(message["event"])

    async def disconnect(self, code):
        if self._auth_timer:
            self._auth_timer.cancel()
        if self.user is not None:
            await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)
