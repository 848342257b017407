from django.apps import AppConfig


class TemplatesAppConfig(AppConfig):
    name = "templates_app"
    verbose_name = "Templates"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Adds the Templates panel to the staff console's dashboard.
        from templates_app import console  # noqa: F401, PLC0415
