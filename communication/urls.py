"""The root URLconf: the core's own routes, then each app's ``urls.py`` (apps plug in there; the
core names none of their routes)."""

from importlib.util import find_spec

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from communication import views, webapp

handler400 = "communication.errors.handler400"
handler403 = "communication.errors.handler403"
handler404 = "communication.errors.handler404"
handler500 = "communication.errors.handler500"

urlpatterns = [
    re_path(r"^health/live/?$", views.live, name="health-live"),
    re_path(r"^health/ready/?$", views.ready, name="health-ready"),
    re_path(r"^\.well-known/jwks\.json$", views.jwks, name="jwks"),
    re_path(r"^app/demo-users/?$", views.demo_users, name="app-demo-users"),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    # The split view: its script is a file, not inline, so a strict Content-Security-Policy holds.
    re_path(r"^api/docs/?$", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    re_path(
        r"^api/redoc/?$",
        SpectacularRedocView.as_view(url_name="schema", template_name="communication/redoc.html"),
        name="redoc",
    ),
    path("api/v1/", include("communication.api.urls")),
    path("app/", webapp.index, name="webapp"),
    *(
        path("", include(f"{app}.urls"))
        for app in settings.PROJECT_APPS
        if app != "communication" and find_spec(f"{app}.urls") is not None
    ),
    path("admin/", admin.site.urls),
]
