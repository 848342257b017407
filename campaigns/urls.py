"""The campaigns app's routes: its API."""

from django.urls import include, path

urlpatterns = [path("api/v1/", include("campaigns.api.urls"))]
