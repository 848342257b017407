"""The templates_app app's routes: its API."""

from django.urls import include, path

urlpatterns = [path("api/v1/", include("templates_app.api.urls"))]
