from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings  # noqa: PLC0415

        from analytics import pricing  # noqa: PLC0415

        # A malformed price list stops the start, rather than every cost silently missing.
        pricing.validate(settings.PROVIDER_PRICES)
