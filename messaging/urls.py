"""The messaging app's routes: its API."""

from django.urls import include, path

urlpatterns = [path("api/v1/", include("messaging.api.urls"))]
