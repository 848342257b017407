from campaigns.api import views
from communication.api.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("segments", views.SegmentViewSet, basename="segment")
router.register("campaigns", views.CampaignViewSet, basename="campaign")

urlpatterns = router.urls
