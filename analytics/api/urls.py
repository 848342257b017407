"""``/api/v1/analytics/``: each report with and without a trailing slash, like the other APIs."""

from django.urls import re_path

from analytics.api import views

urlpatterns = [
    re_path(r"^delivery/?$", views.DeliveryView.as_view(), name="analytics-delivery"),
    re_path(r"^engagement/?$", views.EngagementView.as_view(), name="analytics-engagement"),
    re_path(r"^performance/?$", views.PerformanceView.as_view(), name="analytics-performance"),
    re_path(r"^cost/?$", views.CostView.as_view(), name="analytics-cost"),
]
