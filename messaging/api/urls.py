from communication.api.routers import OptionalSlashRouter
from messaging.api import views

router = OptionalSlashRouter()
router.register("conversations", views.ConversationViewSet, basename="conversation")
router.register("messages", views.MessageViewSet, basename="message")
router.register("attachments", views.AttachmentViewSet, basename="attachment")

urlpatterns = router.urls
