from communication.api.routers import OptionalSlashRouter
from messaging.api import views

router = OptionalSlashRouter()
router.register("conversations", views.ConversationViewSet, basename="conversation")
router.register("messages", views.MessageViewSet, basename="message")
router.register("attachments", views.AttachmentViewSet, basename="attachment")
router.register("keys/devices", views.DeviceKeyViewSet, basename="device-key")
router.register("keys/users", views.UserKeysViewSet, basename="user-keys")

urlpatterns = router.urls
