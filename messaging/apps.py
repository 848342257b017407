from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported once the apps are loaded: both import models.
        from communication import realtime
        from messaging import consumers

        realtime.handlers.update(consumers.HANDLERS)
        realtime.connect_hooks.append(consumers.on_connect)
        realtime.disconnect_hooks.append(consumers.on_disconnect)
