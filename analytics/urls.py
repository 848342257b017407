"""The analytics app's routes: its API, the tracking endpoints (open pixel, click redirect) and
the Prometheus metrics."""

from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/analytics/", include("analytics.api.urls")),
]
