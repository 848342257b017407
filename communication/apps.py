from django.apps import AppConfig


class CommunicationConfig(AppConfig):
    name = "communication"
    verbose_name = "Communication (core)"
    default_auto_field = "django.db.models.BigAutoField"
