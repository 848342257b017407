"""The analytics app's routes: its API, the tracking endpoints (open pixel, click redirect) and
the Prometheus metrics."""

from django.urls import URLPattern, URLResolver, include, path, re_path

from analytics import views
from analytics.metrics import metrics_view

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/analytics/", include("analytics.api.urls")),
    # Any token reaches the views: a bad one gets the same GIF (open) or a 404 (click).
    re_path(r"^t/o/(?P<token>[^/]+)\.gif$", views.open_pixel, name="track-open"),
    re_path(r"^t/c/(?P<token>[^/]+)/?$", views.click_redirect, name="track-click"),
    re_path(r"^metrics/?$", metrics_view, name="metrics"),
]
