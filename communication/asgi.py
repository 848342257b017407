"""ASGI entry point: HTTP through Django, websockets at ``/ws/v1/`` through Channels.

HTTP requests run Django's WSGI handler on a pool of ``WEB_THREADS`` threads
(``communication.bridge``): one hop from the event loop to a thread per request. Django's ASGI
handler hops between the loop and a thread for every sync middleware and for the view; on this
project's sync stack (DRF, the admin, Django's own middleware) those hops cost more than the
requests themselves. Every HTTP request, the send endpoints included, goes through that one
handler and its ``MIDDLEWARE``.
"""

import gc
import os

# The web process pools its database connections (see DATABASES in settings).
os.environ.setdefault("DB_POOL_MAX_SIZE", "20")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
from django.core.wsgi import get_wsgi_application

django_wsgi_app = get_wsgi_application()  # sets Django up

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from communication.bridge import WSGIBridge  # noqa: E402
from communication.realtime import GatewayConsumer, OriginAllowListValidator  # noqa: E402

websocket_urlpatterns = [re_path(r"^ws/v1/?$", GatewayConsumer.as_asgi())]


def make_application(wsgi_app=django_wsgi_app) -> ProtocolTypeRouter:
    """HTTP through Django's handler (one ``MIDDLEWARE`` list for every request) on
    ``WEB_THREADS`` threads; websockets through Channels."""
    return ProtocolTypeRouter(
        {
            "http": WSGIBridge(wsgi_app, workers=settings.WEB_THREADS),
            "websocket": OriginAllowListValidator(URLRouter(websocket_urlpatterns)),
        }
    )


application = make_application()

# What setup made (Django, the apps, their modules: some 130,000 objects) lives as long as the
# process: out of the collector's reach, a full collection no longer walks it. Under a thousand
# sockets a full collection paused the event loop 240-270 ms; 56-97 ms once these are frozen.
gc.freeze()
