from communication.api.audit import AuditViewSet
from communication.api.routers import OptionalSlashRouter
from communication.api.views import MeViewSet, UserViewSet

router = OptionalSlashRouter()
router.register("me", MeViewSet, basename="me")
router.register("users", UserViewSet, basename="user")
router.register("compliance/audit", AuditViewSet, basename="compliance-audit")

urlpatterns = router.urls
