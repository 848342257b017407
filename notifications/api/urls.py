from django.urls import re_path

from notifications.api import devices, views

UUID = r"[0-9a-fA-F-]{36}"

urlpatterns = [
    re_path(r"^notifications/?$", views.SendView.as_view(), name="notifications-send"),
    re_path(
        r"^notifications/schedule/?$", views.ScheduleView.as_view(), name="notifications-schedule"
    ),
    re_path(
        r"^notifications/requests/?$",
        views.RequestListView.as_view(),
        name="notifications-requests",
    ),
    re_path(
        rf"^notifications/requests/(?P<request_id>{UUID})/?$",
        views.RequestDetailView.as_view(),
        name="notifications-request",
    ),
    re_path(r"^notifications/unread/?$", views.UnreadView.as_view(), name="notifications-unread"),
    re_path(
        r"^notifications/history/?$", views.HistoryView.as_view(), name="notifications-history"
    ),
    re_path(
        r"^notifications/read-all/?$", views.ReadAllView.as_view(), name="notifications-read-all"
    ),
    re_path(
        r"^notifications/categories/?$",
        views.CategoriesView.as_view(),
        name="notifications-categories",
    ),
    re_path(
        r"^notifications/preferences/?$",
        views.PreferencesView.as_view(),
        name="notifications-preferences",
    ),
    re_path(
        r"^notifications/consents/?$", views.ConsentsView.as_view(), name="notifications-consents"
    ),
    re_path(
        rf"^notifications/(?P<notification_id>{UUID})/?$",
        views.NotificationDetailView.as_view(),
        name="notification-detail",
    ),
    re_path(
        rf"^notifications/(?P<notification_id>{UUID})/read/?$",
        views.MarkView.as_view(read=True),
        name="notification-read",
    ),
    re_path(
        rf"^notifications/(?P<notification_id>{UUID})/unread/?$",
        views.MarkView.as_view(read=False),
        name="notification-unread",
    ),
    re_path(r"^outbox/?$", views.OutboxView.as_view(), name="outbox"),
    # Push: the device registry, the VAPID public key, and the page using the service worker.
    re_path(r"^devices/?$", devices.DevicesView.as_view(), name="devices"),
    re_path(
        r"^devices/(?P<device_id>[0-9]{1,18})/?$",
        devices.DeviceDetailView.as_view(),
        name="device-detail",
    ),
    re_path(
        r"^push/vapid-public-key/?$",
        devices.VapidPublicKeyView.as_view(),
        name="push-vapid-public-key",
    ),
    re_path(r"^push/page/?$", devices.push_page, name="push-page"),
]
