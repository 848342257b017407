"""People and the console's own housekeeping: users, staff groups, categories, the audit trail,
login attempts (django-axes) and the beat schedules (django-celery-beat), the last three
re-registered on unfold's ``ModelAdmin`` so that every page of the console has its layout."""

import json
from urllib.parse import urlencode

from axes import admin as axes_admin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from unfold.admin import ModelAdmin, TabularInline
from unfold.contrib.filters.admin import RangeDateTimeFilter, TextFilter
from unfold.decorators import display
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm
from unfold.paginator import InfinitePaginator
from unfold.utils import parse_datetime_str
from unfold.widgets import UnfoldAdminSelectWidget, UnfoldAdminTextInputWidget

from communication import audit, organizations, services
from communication.admin_tools import ExactSearchMixin
from communication.models import AuditEntry, Category, Organization, User

admin.site.unregister(Group)
for _model in (
    PeriodicTask,
    IntervalSchedule,
    CrontabSchedule,
    SolarSchedule,
    ClockedSchedule,
    AccessAttempt,
    AccessLog,
    # Not kept (AXES_ENABLE_ACCESS_FAILURE_LOG is off): no page for an always-empty table.
    AccessFailureLog,
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


@admin.register(User)
class UserAdmin(ExactSearchMixin, BaseUserAdmin, ModelAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm
    list_display = ("username", "external_id", "name", "email", "phone", "is_staff", "created_at")
    # Exact look-ups on indexed columns: the table holds every end user. (No organization filter:
    # its choices would be a scan of the table's distinct values.)
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("username", "external_id", "email", "phone")
    search_help_text = "An exact username, user id, email address or phone number (E.164)."
    show_full_result_count = False
    ordering = ("-created_at",)
    readonly_fields = ("id", "created_at", "updated_at", "last_login", "date_joined", "digests")
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
                    "digests",
                )
            },
        ),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Dates", {"fields": ("last_login", "date_joined", "created_at", "updated_at")}),
    )

    @display(description="digests")
    def digests(self, obj: User) -> str:
        # By URL name only: the Digests page is notifications' (this app imports none of it).
        if obj.pk is None or not obj.external_id:
            return "—"
        url = (
            reverse("admin:notifications_digest_changelist")
            + "?"
            + urlencode({"q": obj.external_id})
        )
        return format_html('<a href="{}" id="user-digests">What is held for their digests</a>', url)


@admin.register(Category)
class CategoryAdmin(ModelAdmin):
    list_display = (
        "key",
        "name",
        "default_channels",
        "mandatory",
        "requires_consent",
        "tracking_allowed",
        "caps",
        "position",
    )
    list_editable = ("position",)
    list_filter = ("mandatory", "requires_consent", "tracking_allowed")
    search_fields = ("key", "name", "description")
    readonly_fields = ("created_at", "updated_at")

    @display(description="frequency caps")
    def caps(self, obj: Category) -> str:
        caps = obj.frequency_caps or {}
        return ", ".join(f"{ch}: {c['limit']} per {c['period']}" for ch, c in caps.items()) or "—"

    def save_model(self, request, obj, form, change):
        services.category_save(
            category=obj,
            changed=list(form.changed_data),
            caps_before=form.initial.get("frequency_caps") if change else None,
        )


@admin.register(Group)
class GroupAdmin(BaseGroupAdmin, ModelAdmin):
    pass


class _InheritedJSONField(forms.JSONField):
    """Shows an inherited policy field (NULL) as an empty box, which is how it is entered,
    rather than ``null``."""

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


@admin.register(Organization)
class OrganizationAdmin(ModelAdmin):
    """The organization tree and its communication policy. Kept in step with the identity
    service when one is configured (unknown organizations are imported as tokens name them);
    staff manage it here otherwise. Saved through ``organizations.organization_save``, which
    audits the policy before and after."""

    list_display = ("id", "name", "parent", "path", "direct_scope", "group_roles", "bcast_roles")
    list_select_related = ("parent",)
    search_fields = ("id", "name")
    list_filter = ("direct_scope",)
    autocomplete_fields = ("parent",)
    readonly_fields = ("path", "effective_policy", "created_at", "updated_at")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in ("group_create_roles", "broadcast_roles"):
            kwargs["form_class"] = _InheritedJSONField
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    fieldsets = (
        (None, {"fields": ("id", "name", "parent", "path")}),
        (
            "Communication policy (blank: inherited from the parent)",
            {
                "fields": (
                    "direct_scope",
                    "group_create_roles",
                    "broadcast_roles",
                    "effective_policy",
                )
            },
        ),
        (None, {"fields": ("created_at", "updated_at")}),
    )

    def get_readonly_fields(self, request, obj=None):
        # The id is the identity service's name for it: set once.
        return (*self.readonly_fields, "id") if obj is not None else self.readonly_fields

    @display(description="group creators")
    def group_roles(self, obj: Organization) -> str:
        return _roles_text(obj.group_create_roles, "everyone")

    @display(description="broadcasters")
    def bcast_roles(self, obj: Organization) -> str:
        return _roles_text(obj.broadcast_roles, "nobody")

    @display(description="policy in force")
    def effective_policy(self, obj: Organization) -> str:
        if obj is None or not obj.pk:
            return "—"
        policy = organizations.organization_policy(obj.pk)
        return (
            f"direct scope: {policy.direct_scope}; group creators: "
            f"{', '.join(policy.group_create_roles) or 'everyone'}; broadcasters: "
            f"{', '.join(policy.broadcast_roles) or 'nobody'}"
        )

    def save_model(self, request, obj, form, change):
        before = None
        if change:
            stored = Organization.objects.get(pk=obj.pk)
            before = organizations.organization_snapshot(stored)
        organizations.organization_save(organization=obj, before=before)


def _roles_text(roles: list[str] | None, empty: str) -> str:
    if roles is None:
        return "inherited"
    return ", ".join(roles) or empty


# ---------------------------------------------------------------------------------- audit trail


class _ExactFilter(TextFilter):
    """A text box matched exactly, on one of the table's indexes (a contains-match would scan)."""

    field = ""

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        return queryset.filter(**{self.field: value}) if value else queryset


class ActorFilter(_ExactFilter):
    title = "actor (user:…, service:…, staff:…)"
    parameter_name = field = "actor"


class ActionFilter(_ExactFilter):
    title = "action (template.approve, …)"
    parameter_name = field = "action"


class ObjectTypeFilter(_ExactFilter):
    title = "object type (app.model)"
    parameter_name = field = "object_type"


class ObjectIdFilter(_ExactFilter):
    title = "object id"
    parameter_name = field = "object_id"


class AtFilter(RangeDateTimeFilter):
    """From and to (both included), read in the console's time zone: unfold's own filter hands
    the database naive times."""

    def queryset(self, request, queryset):
        bounds = {}
        for side, lookup in (("from", "gte"), ("to", "lte")):
            day = self.used_parameters.get(f"{self.parameter_name}_{side}_0")
            clock = self.used_parameters.get(f"{self.parameter_name}_{side}_1")
            if day and clock:
                moment = parse_datetime_str(f"{day} {clock}")
                if moment is None:  # the admin's "invalid filter" answer, not everything
                    raise IncorrectLookupParameters(f"{day} {clock}")
                bounds[f"{self.parameter_name}__{lookup}"] = timezone.make_aware(moment)
        return queryset.filter(**bounds)


@admin.register(AuditEntry)
class AuditEntryAdmin(ModelAdmin):
    """The audit trail, newest first: read only, even for superusers (the table refuses changes
    anyway). The header shows the chain's watermark and its last verification."""

    list_display = ("id", "at", "actor", "action", "object", "summary", "address")
    list_display_links = ("id",)
    list_filter = (
        ActorFilter,
        ActionFilter,
        ObjectTypeFilter,
        ObjectIdFilter,
        ("at", AtFilter),
    )
    list_filter_submit = True
    ordering = ("-id",)
    sortable_by = ()
    paginator = InfinitePaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_before_template = "admin/communication/auditentry/chain_status.html"
    fields = (
        "id",
        "at",
        "actor",
        "action",
        "object_type",
        "object_id",
        "changes_view",
        "ip",
        "request_id",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        context = {
            "title": "Audit trail",
            "chain": audit.audit_status(),
            "cap": audit.UNSEALED_COUNT_CAP,
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    @display(description="object")
    def object(self, obj: AuditEntry) -> str:
        return f"{obj.object_type} {obj.object_id}".strip()

    @display(description="IP")
    def address(self, obj: AuditEntry) -> str:
        return obj.ip or "—"

    @display(description="changes")
    def summary(self, obj: AuditEntry) -> str:
        names = ", ".join(sorted(obj.changes)) if isinstance(obj.changes, dict) else ""
        return names[:80] + ("…" if len(names) > 80 else "")

    @display(description="changes")
    def changes_view(self, obj: AuditEntry) -> str:
        text = json.dumps(obj.changes, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html('<pre class="whitespace-pre-wrap">{}</pre>', text)


# ------------------------------------------------------------------------------ login attempts


@admin.register(AccessAttempt)
class AccessAttemptAdmin(axes_admin.AccessAttemptAdmin, ModelAdmin):
    pass


@admin.register(AccessLog)
class AccessLogAdmin(axes_admin.AccessLogAdmin, ModelAdmin):
    pass


# ------------------------------------------------------------------------------- beat schedules


class _TaskSelectWidget(UnfoldAdminSelectWidget, beat_admin.TaskSelectWidget):
    pass


class PeriodicTaskForm(beat_admin.PeriodicTaskForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["task"].widget = UnfoldAdminTextInputWidget()
        self.fields["regtask"].widget = _TaskSelectWidget()


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin, ModelAdmin):
    form = PeriodicTaskForm
    # django-celery-beat's own templates carry an inline script (refused by the console's policy)
    # and the classic admin's breadcrumbs: unfold's stock ones instead.
    change_form_template = "admin/change_form.html"
    change_list_template = "admin/change_list.html"


class PeriodicTaskInline(TabularInline):
    model = PeriodicTask
    fields = ("name", "task", "args", "kwargs")
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request, obj=None):
        return False


# django-celery-beat's schedule admins list their tasks in a stock inline; unfold's instead.


@admin.register(ClockedSchedule)
class ClockedScheduleAdmin(beat_admin.ClockedScheduleAdmin, ModelAdmin):
    inlines = (PeriodicTaskInline,)


@admin.register(CrontabSchedule)
class CrontabScheduleAdmin(beat_admin.CrontabScheduleAdmin, ModelAdmin):
    inlines = (PeriodicTaskInline,)


@admin.register(SolarSchedule)
class SolarScheduleAdmin(beat_admin.SolarScheduleAdmin, ModelAdmin):
    inlines = (PeriodicTaskInline,)


@admin.register(IntervalSchedule)
class IntervalScheduleAdmin(beat_admin.IntervalScheduleAdmin, ModelAdmin):
    inlines = (PeriodicTaskInline,)
