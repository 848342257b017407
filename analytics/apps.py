from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The metrics registry (and its system check) exists before the apps register into it.
        from analytics import metrics  # noqa: F401, PLC0415
