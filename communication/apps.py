from django.apps import AppConfig


class CommunicationConfig(AppConfig):
    name = "communication"
    verbose_name = "People and settings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Registers the OpenAPI extension; the module imports DRF, which needs the settings.
        from communication.auth import schema  # noqa: F401, PLC0415
