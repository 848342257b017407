from django.urls import re_path

from communication.api.routers import OptionalSlashRouter
from notifications.api import broadcast, bulk, cancel, devices, views, webhooks

router = OptionalSlashRouter()
router.register("notifications/bulk", bulk.BulkViewSet, basename="notifications-bulk")
router.register("notifications/batches", bulk.BatchViewSet, basename="notifications-batch")
router.register("notifications/schedule", views.ScheduleViewSet, basename="notifications-schedule")
router.register("notifications/requests", views.RequestViewSet, basename="notifications-request")
router.register("notifications", cancel.CancelViewSet, basename="notifications-cancel")
router.register("notifications", cancel.PushOpenedViewSet, basename="notification-push")
router.register("notifications", views.SendViewSet, basename="notifications-send")
router.register("notifications", views.InboxViewSet, basename="notification")
router.register("notifications", views.PreferenceViewSet, basename="notification-preferences")
# A user's send to a whole organization (beside communication's GET /organizations/{id}).
router.register("organizations", broadcast.BroadcastViewSet, basename="organization-broadcast")
router.register("outbox", views.OutboxViewSet, basename="outbox")
# Push: the device registry, the VAPID public key, and the page using the service worker.
router.register("devices", devices.DeviceViewSet, basename="device")
router.register("push/vapid-public-key", devices.VapidPublicKeyViewSet, basename="push-vapid")

# Outbound webhooks: a service's endpoints, their delivery log and replays.
router.register("webhooks/endpoints", webhooks.WebhookEndpointViewSet, basename="webhook-endpoint")

urlpatterns = [
    *router.urls,
    # A page, not an API endpoint: no viewset, the same optional slash.
    re_path(r"^push/page/?$", devices.push_page, name="push-page"),
]
