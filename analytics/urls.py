"""The analytics app's routes: its API, the tracking endpoints (open pixel, click redirect) and
the Prometheus metrics."""

from django.urls import URLPattern, URLResolver, include, path, re_path

from analytics.metrics import metrics_view

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/analytics/", include("analytics.api.urls")),
    re_path(r"^metrics/?$", metrics_view, name="metrics"),
]
