from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from communication import views
from notifications.api.devices import push_page
from notifications.views import unsubscribe_view

handler400 = "communication.errors.handler400"
handler403 = "communication.errors.handler403"
handler404 = "communication.errors.handler404"
handler500 = "communication.errors.handler500"

urlpatterns = [
    re_path(r"^health/live/?$", views.live, name="health-live"),
    re_path(r"^health/ready/?$", views.ready, name="health-ready"),
    re_path(r"^\.well-known/jwks\.json$", views.jwks, name="jwks"),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", include("communication.api.urls")),
    path("api/v1/", include("templates_app.api.urls")),
    path("api/v1/", include("notifications.api.urls")),
    path("api/v1/", include("messaging.api.urls")),
    re_path(r"^u/(?P<token>[\w:.\-]+)/?$", unsubscribe_view, name="unsubscribe"),
    path("webhooks/", include("notifications.webhooks.urls")),
    re_path(r"^push/?$", push_page, name="push"),
    path("admin/", admin.site.urls),
]
