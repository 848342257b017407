from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings  # noqa: PLC0415

        # The metrics registry (and its system check) exists before the apps register into it.
        from analytics import (  # noqa: F401, PLC0415
            compliance,
            metrics,
            pricing,
        )

        # A malformed price list stops the start, rather than every cost silently missing.
        pricing.validate(settings.PROVIDER_PRICES)
