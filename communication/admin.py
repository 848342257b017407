from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from communication.models import Category, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "external_id", "name", "email", "phone", "is_staff", "created_at")
    list_filter = ("is_staff", "is_superuser", "is_active", "organization")
    search_fields = ("username", "external_id", "name", "email", "phone")
    ordering = ("-created_at",)
    readonly_fields = ("id", "created_at", "updated_at", "last_login", "date_joined")
    fieldsets = (
        (None, {"fields": ("id", "username", "password")}),
        (
            "Identity",
            {
                "fields": (
                    "external_id",
                    "name",
                    "email",
                    "phone",
                    "locale",
                    "timezone",
                    "organization",
                    "roles",
                    "attributes",
                )
            },
        ),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Dates", {"fields": ("last_login", "date_joined", "created_at", "updated_at")}),
    )


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = (
        "key",
        "name",
        "default_channels",
        "mandatory",
        "requires_consent",
        "tracking_allowed",
        "position",
    )
    list_editable = ("position",)
    list_filter = ("mandatory", "requires_consent", "tracking_allowed")
    search_fields = ("key", "name", "description")
    readonly_fields = ("created_at", "updated_at")
