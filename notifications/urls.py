"""The notifications app's routes: its API, the unsubscribe page, provider webhooks, the push
page."""

from django.urls import include, path, re_path

from notifications.api.devices import push_page
from notifications.views import unsubscribe_view

urlpatterns = [
    path("api/v1/", include("notifications.api.urls")),
    re_path(r"^u/(?P<token>[\w:.\-]+)/?$", unsubscribe_view, name="unsubscribe"),
    path("webhooks/", include("notifications.webhooks.urls")),
    re_path(r"^push/?$", push_page, name="push"),
]
