"""The analytics app's routes: its API, the tracking endpoints (open pixel, click redirect) and
the Prometheus metrics."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
