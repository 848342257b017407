from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Conversations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Here, not at the top: both import models, which cannot load before the registry.
        from communication import realtime  # noqa: PLC0415
        from messaging import consumers  # noqa: PLC0415

        realtime.handlers.update(consumers.HANDLERS)
        realtime.connect_hooks.append(consumers.on_connect)
        realtime.disconnect_hooks.append(consumers.on_disconnect)
