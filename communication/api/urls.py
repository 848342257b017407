from django.urls import re_path

from communication.api.audit import AuditViewSet
from communication.api.compliance import ComplianceExportView, ComplianceReportView
from communication.api.erasure import ErasureViewSet
from communication.api.organizations import OrganizationViewSet
from communication.api.routers import OptionalSlashRouter
from communication.api.views import MeViewSet, UserViewSet

router = OptionalSlashRouter()
router.register("me", MeViewSet, basename="me")
router.register("users", UserViewSet, basename="user")
router.register("organizations", OrganizationViewSet, basename="organization")
router.register("compliance/audit", AuditViewSet, basename="compliance-audit")
router.register("compliance/erasure", ErasureViewSet, basename="compliance-erasure")

urlpatterns = [
    *router.urls,
    re_path(
        r"^compliance/export/(?P<user_id>[^/]+)/?$",
        ComplianceExportView.as_view(),
        name="compliance-export",
    ),
    re_path(r"^compliance/report/?$", ComplianceReportView.as_view(), name="compliance-report"),
]
