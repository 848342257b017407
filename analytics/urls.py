"""The analytics app's routes: its API, the tracking endpoints (open pixel, click redirect) and
the Prometheus metrics."""

from django.urls import URLPattern, URLResolver, re_path

from analytics.metrics import metrics_view

urlpatterns: list[URLPattern | URLResolver] = []

urlpatterns += [re_path(r"^metrics/?$", metrics_view, name="metrics")]
