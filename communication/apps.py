from django.apps import AppConfig


class CommunicationConfig(AppConfig):
    name = "communication"
    verbose_name = "People and settings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.contrib import admin  # noqa: PLC0415
        from django.contrib.admin.models import LogEntry  # noqa: PLC0415
        from django.db.models.signals import post_save  # noqa: PLC0415

        from communication import admin_tools, console  # noqa: PLC0415

        # Registers the OpenAPI extension; the module imports DRF, which needs the settings.
        from communication.auth import schema  # noqa: F401, PLC0415
        from communication.compliance import declarations  # noqa: F401, PLC0415

        # The console's home page shows the apps' panels (communication.console), not unfold's
        # list of apps. unfold's own ready() made the site, earlier in INSTALLED_APPS.
        admin.site.index_template = console.INDEX_TEMPLATE

        # The console's changes reach the audit trail through the admin's own log (one path for
        # every form, action and bulk delete): communication.admin_tools.
        post_save.connect(admin_tools.audit_log_entry, sender=LogEntry, dispatch_uid="audit-admin")
        admin_tools.audited_delete_selected_setup()

        # A ModelSerializer shows an encrypted field as what it holds once decrypted (text,
        # JSON), not as the bytes of its column.
        from rest_framework import serializers  # noqa: PLC0415

        from communication.fields import EncryptedJSONField, EncryptedTextField  # noqa: PLC0415

        mapping = serializers.ModelSerializer.serializer_field_mapping
        mapping[EncryptedTextField] = serializers.CharField
        mapping[EncryptedJSONField] = serializers.JSONField
