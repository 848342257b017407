"""The staff console's sidebar and icons (``settings.UNFOLD``): pages grouped by what staff do,
not by Django app. Each item shows only to a staff member who may view what it lists. Read while
the settings load: URLs are reversed lazily, nothing here imports a model."""

from __future__ import annotations

from django.templatetags.static import static
from django.urls import reverse, reverse_lazy


def _can(permission: str):
    return lambda request: request.user.has_perm(permission)


def _admin_url(name: str):
    return reverse_lazy(f"admin:{name}")


def _delivery_log_active(request) -> bool:
    # Provider health and Send a test live under the delivery log's URL: unfold would mark the
    # log active on their pages too (it matches by prefix).
    log = reverse("admin:notifications_delivery_changelist")
    own = (reverse("admin:notifications_provider_health"), reverse("admin:notifications_send_test"))
    return request.path.startswith(log) and not request.path.startswith(own)


def _analytics_active(request) -> bool:
    # The template and campaign reports belong to the analytics pages.
    return request.path.startswith(
        (reverse("admin:analytics_dashboard"), reverse("admin:index") + "analytics/report/")
    )


def _item(title: str, icon: str, url: str, permission: str) -> dict:
    return {"title": title, "icon": icon, "link": _admin_url(url), "permission": _can(permission)}


FAVICONS = [
    {
        "rel": "icon",
        "sizes": "any",
        "type": "image/svg+xml",
        "href": lambda request: static("communication/favicon.svg"),
    }
]

NAVIGATION = [
    {
        "items": [
            {
                "title": "Dashboard",
                "icon": "dashboard",
                "link": _admin_url("index"),
                "permission": lambda request: request.user.is_staff,
            },
            {
                **_item("Analytics", "monitoring", "analytics_dashboard", "analytics.view_rollup"),
                "active": _analytics_active,
            },
        ]
    },
    {
        "title": "Templates",
        "collapsible": False,
        "items": [
            _item(
                "Templates",
                "description",
                "templates_app_template_changelist",
                "templates_app.view_template",
            ),
            _item(
                "Versions and approvals",
                "approval",
                "templates_app_templateversion_changelist",
                "templates_app.view_templateversion",
            ),
        ],
    },
    {
        "title": "Campaigns",
        "items": [
            _item(
                "Campaigns", "campaign", "campaigns_campaign_changelist", "campaigns.view_campaign"
            ),
            _item(
                "Segments", "group_work", "campaigns_segment_changelist", "campaigns.view_segment"
            ),
            _item(
                "Static lists",
                "list_alt",
                "campaigns_staticlist_changelist",
                "campaigns.view_staticlist",
            ),
        ],
    },
    {
        "title": "Notifications",
        "items": [
            {
                **_item(
                    "Delivery log",
                    "local_shipping",
                    "notifications_delivery_changelist",
                    "notifications.view_delivery",
                ),
                "active": _delivery_log_active,
            },
            _item(
                "Notifications",
                "notifications",
                "notifications_notification_changelist",
                "notifications.view_notification",
            ),
            _item(
                "Requests",
                "call_received",
                "notifications_notificationrequest_changelist",
                "notifications.view_notificationrequest",
            ),
            _item(
                "Outbox",
                "outbox",
                "notifications_outboxmessage_changelist",
                "notifications.view_outboxmessage",
            ),
            _item(
                "Webhook endpoints",
                "webhook",
                "notifications_webhookendpoint_changelist",
                "notifications.view_webhookendpoint",
            ),
            _item(
                "Provider health",
                "monitor_heart",
                "notifications_provider_health",
                "notifications.view_delivery",
            ),
            _item(
                "Send a test",
                "send",
                "notifications_send_test",
                "notifications.add_notificationrequest",
            ),
            _item("Events", "timeline", "analytics_event_changelist", "analytics.view_event"),
        ],
    },
    {
        "title": "Conversations",
        "items": [
            _item(
                "Conversations",
                "forum",
                "messaging_conversation_changelist",
                "messaging.view_conversation",
            ),
            _item("Messages", "chat", "messaging_message_changelist", "messaging.view_message"),
            _item(
                "Edits and deletions",
                "edit_note",
                "messaging_messageedit_changelist",
                "messaging.view_messageedit",
            ),
        ],
    },
    {
        "title": "People",
        "items": [
            _item(
                "Users",
                "person",
                "communication_user_changelist",
                "communication.view_user",
            ),
            _item(
                "Organizations",
                "corporate_fare",
                "communication_organization_changelist",
                "communication.view_organization",
            ),
            _item("Staff groups", "group", "auth_group_changelist", "auth.view_group"),
            _item(
                "Devices",
                "devices",
                "notifications_device_changelist",
                "notifications.view_device",
            ),
            _item(
                "Preferences",
                "tune",
                "notifications_notificationpreference_changelist",
                "notifications.view_notificationpreference",
            ),
            _item(
                "Quiet hours",
                "bedtime",
                "notifications_quiethours_changelist",
                "notifications.view_quiethours",
            ),
            _item(
                "Digests",
                "inbox",
                "notifications_digest_changelist",
                "notifications.view_digest",
            ),
            _item(
                "Consents",
                "verified_user",
                "notifications_consent_changelist",
                "notifications.view_consent",
            ),
            _item(
                "Suppressions",
                "block",
                "notifications_suppression_changelist",
                "notifications.view_suppression",
            ),
            _item(
                "Categories",
                "category",
                "communication_category_changelist",
                "communication.view_category",
            ),
            _item(
                "Audit trail",
                "policy",
                "communication_auditentry_changelist",
                "communication.view_auditentry",
            ),
            _item(
                "Login attempts",
                "lock",
                "axes_accessattempt_changelist",
                "axes.view_accessattempt",
            ),
        ],
    },
    {
        "title": "Schedules",
        "items": [
            _item(
                "Periodic tasks",
                "schedule",
                "django_celery_beat_periodictask_changelist",
                "django_celery_beat.view_periodictask",
            ),
            _item(
                "Intervals",
                "timer",
                "django_celery_beat_intervalschedule_changelist",
                "django_celery_beat.view_intervalschedule",
            ),
            _item(
                "Crontabs",
                "calendar_month",
                "django_celery_beat_crontabschedule_changelist",
                "django_celery_beat.view_crontabschedule",
            ),
            _item(
                "Clocked",
                "alarm",
                "django_celery_beat_clockedschedule_changelist",
                "django_celery_beat.view_clockedschedule",
            ),
            _item(
                "Solar events",
                "wb_twilight",
                "django_celery_beat_solarschedule_changelist",
                "django_celery_beat.view_solarschedule",
            ),
        ],
    },
]
