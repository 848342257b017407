from communication.api.erasure import ErasureViewSet
from communication.api.routers import OptionalSlashRouter
from communication.api.views import MeViewSet, UserViewSet

router = OptionalSlashRouter()
router.register("me", MeViewSet, basename="me")
router.register("users", UserViewSet, basename="user")
router.register("compliance/erasure", ErasureViewSet, basename="compliance-erasure")

urlpatterns = router.urls
