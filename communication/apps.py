from django.apps import AppConfig


class CommunicationConfig(AppConfig):
    name = "communication"
    verbose_name = "Communication (core)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from communication.auth import schema  # noqa: F401  (registers the OpenAPI extension)
