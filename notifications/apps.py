from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from communication import realtime
        from notifications import services

        # The gateway's first message carries the unread count.
        realtime.ready_hooks.append(lambda user: {"unread": services.unread_count(user)})
