from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported once the app registry is ready: the services import the models. The console
        # module registers the dashboard's panels, the metrics module its scrape-time collector.
        from analytics import tracking  # noqa: PLC0415
        from communication import realtime  # noqa: PLC0415
        from notifications import (  # noqa: F401, PLC0415
            compliance,
            console,
            metrics,
            services,
        )
        from notifications.services import cancellation  # noqa: PLC0415

        # A person opening or clicking an email stops its notification's escalation.
        tracking.engaged.connect(cancellation.email_engaged, dispatch_uid="escalation-stop")

        # The gateway's first message carries the unread count.
        realtime.ready_hooks.append(lambda user: {"unread": services.unread_count(user)})
