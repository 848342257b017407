from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Declares the campaigns' personal data in the compliance registry.
        from campaigns import compliance  # noqa: F401, PLC0415
