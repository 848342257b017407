"""ASGI entry point: HTTP through Django, websockets at ``/ws/v1/`` through Channels."""

import os

# The web process pools its database connections (see DATABASES in settings).
os.environ.setdefault("DB_POOL_MAX_SIZE", "20")
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from communication.realtime import GatewayConsumer, OriginAllowListValidator  # noqa: E402

websocket_urlpatterns = [re_path(r"^ws/v1/?$", GatewayConsumer.as_asgi())]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginAllowListValidator(URLRouter(websocket_urlpatterns)),
    }
)
