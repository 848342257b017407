from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Conversations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Here, not at the top: both import models, which cannot load before the registry.
        from communication import realtime  # noqa: PLC0415
        from messaging import (  # noqa: PLC0415
            compliance,  # noqa: F401
            consumers,
            metrics,
        )

        realtime.handlers.update(consumers.HANDLERS)
        # The socket count first: a later hook that raises closes the socket, and the disconnect
        # hooks (run for every socket that got this far) take it off again.
        realtime.connect_hooks.append(metrics.on_connect)
        realtime.connect_hooks.append(consumers.on_connect)
        realtime.disconnect_hooks.append(metrics.on_disconnect)
        realtime.disconnect_hooks.append(consumers.on_disconnect)
