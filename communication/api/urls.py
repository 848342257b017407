from django.urls import re_path

from communication.api.views import MeView, UserDetailView

urlpatterns = [
    re_path(r"^me/?$", MeView.as_view(), name="me"),
    re_path(r"^users/(?P<user_id>[^/]+)/?$", UserDetailView.as_view(), name="user-detail"),
]
