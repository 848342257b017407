"""Static lists in the staff console, and the CSV upload of their members.

The upload is django-import-export's two steps on the members' page, into the list chosen in the
form (the list's page links to it with the list already chosen): the file is checked (size,
encoding, columns, rows), every row is checked, refused rows are listed with their row number and
code; the valid rows can then be confirmed, and only they are imported.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from import_export.admin import ImportMixin
from import_export.formats import base_formats
from import_export.forms import ConfirmImportForm
from import_export.results import RowResult
from unfold.admin import ModelAdmin
from unfold.contrib.import_export.forms import ImportForm
from unfold.widgets import UnfoldAdminSelectWidget

from campaigns.imports import StaticListMemberResource, check_upload
from campaigns.models import StaticList, StaticListMember
from campaigns.services import lists
from communication.models import normalize_e164

PREVIEW_ROWS = 1000


class MemberImportForm(ImportForm):
    static_list = forms.ModelChoiceField(
        queryset=StaticList.objects.order_by("name"),
        label="Import into the list",
        widget=UnfoldAdminSelectWidget,
    )
    field_order = ["static_list", "resource", "import_file", "format"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["import_file"].help_text = (
            "CSV (UTF-8), at most "
            f"{lists.MAX_FILE_BYTES // (1024 * 1024)} MB and {lists.MAX_ROWS:,} rows: a column "
            "user_id, email or phone (one filled per row); every other column becomes the "
            "member's data, and a column named data may hold a JSON object."
        )

    def clean_import_file(self):
        upload = self.cleaned_data["import_file"]
        if upload.size > lists.MAX_FILE_BYTES:  # refused before it is read
            raise forms.ValidationError(
                f"The file is larger than {lists.MAX_FILE_BYTES // (1024 * 1024)} MB."
            )
        raw = upload.read()
        upload.seek(0)
        problem = check_upload(raw)
        if problem:
            raise forms.ValidationError(problem)
        return upload


class MemberConfirmForm(ConfirmImportForm):
    static_list = forms.ModelChoiceField(
        queryset=StaticList.objects.all(), widget=forms.HiddenInput
    )


def _import_url(static_list: StaticList) -> str:
    return reverse("admin:campaigns_staticlistmember_import") + f"?static_list={static_list.pk}"


@admin.register(StaticList)
class StaticListAdmin(ModelAdmin):
    list_display = ("name", "member_count", "created_by", "created_at")
    search_fields = ("name", "description")
    fields = ("name", "description", "members", "created_by", "created_at", "updated_at")
    readonly_fields = ("members", "created_by", "created_at", "updated_at")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("members"))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: StaticList) -> int:
        return obj.member_count  # type: ignore[attr-defined]

    @admin.display(description="members")
    def members(self, obj: StaticList) -> str:
        if obj._state.adding:
            return "Save the list, then import its members from a CSV file."
        members_url = (
            reverse("admin:campaigns_staticlistmember_changelist")
            + f"?static_list__id__exact={obj.pk}"
        )
        return format_html(
            '{} · <a class="text-primary-600" href="{}" id="import-members">Import members from '
            'CSV</a> · <a class="text-primary-600" href="{}">See the members</a>',
            f"{obj.members.count():,}",
            _import_url(obj),
            members_url,
        )

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in ("name", "description")}
        if change:
            lists.static_list_update(static_list=obj, **data)
            return
        created = lists.static_list_create(actor=request.user, **data)
        obj.pk, obj.created_by = created.pk, created.created_by
        obj.created_at, obj.updated_at = created.created_at, created.updated_at
        obj._state.adding = False

    def delete_model(self, request, obj):
        lists.static_list_delete(static_list=obj)


@admin.register(StaticListMember)
class StaticListMemberAdmin(ImportMixin, ModelAdmin):
    """Members are added by import only; they can be read and removed here."""

    resource_classes = [StaticListMemberResource]
    import_form_class = MemberImportForm
    confirm_form_class = MemberConfirmForm
    import_formats = [base_formats.CSV]
    from_encoding = "utf-8-sig"
    import_error_display = ("message",)
    import_template_name = "admin/campaigns/staticlistmember/import.html"
    skip_admin_log = True  # one log entry on the list, not one per member
    list_display = ("member", "static_list", "user", "email", "phone", "created_at")
    list_filter = ("static_list",)
    list_select_related = ("static_list", "user")
    search_fields = ("=key",)  # shows the box; the search is get_search_results
    search_help_text = "Exact user id, email or phone number"
    readonly_fields = ("static_list", "key", "user", "email", "phone", "data", "created_at")

    def get_search_results(self, request, queryset, search_term):
        # An address-only member's key is its address's hash (the address is encrypted).
        term = search_term.strip()
        if not term:
            return queryset, False
        keys = {term, lists.address_key(term)}
        try:
            keys.add(lists.address_key(normalize_e164(term[:64])))
        except ValidationError:
            pass
        return queryset.filter(key__in=keys), False

    @admin.display(description="member")
    def member(self, obj: StaticListMember) -> str:
        return obj.email or obj.phone or obj.key

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_import_permission(self, request):
        return request.user.has_perm("campaigns.add_staticlistmember")

    def get_import_form_initial(self, request):
        return {"static_list": request.GET.get("static_list")}

    def get_confirm_form_initial(self, request, import_form):
        initial = super().get_confirm_form_initial(request, import_form)
        if import_form is not None:
            initial["static_list"] = import_form.cleaned_data["static_list"].pk
        return initial

    def get_import_resource_kwargs(self, request, **kwargs):
        form = kwargs.get("form")
        static_list = getattr(form, "cleaned_data", {}).get("static_list")
        request._import_static_list = static_list
        return {"static_list": static_list}

    def import_action(self, request, **kwargs):
        # import-export offers to confirm only a file without faults; here the valid rows of a
        # file with some refused rows may be confirmed too (the refused ones stay listed).
        response = super().import_action(request, **kwargs)
        context = getattr(response, "context_data", None) or {}
        result = context.get("result")
        if result is not None:
            context["refused_rows"] = len(result.invalid_rows)
            # A page of 100,000 rows helps no one: the first ones of each kind are shown (the
            # totals are the whole file's; the confirmed import reads the file again).
            if len(result.rows) > PREVIEW_ROWS or len(result.invalid_rows) > PREVIEW_ROWS:
                context["preview_cut"] = PREVIEW_ROWS
                result.rows = result.rows[:PREVIEW_ROWS]
                result.invalid_rows = result.invalid_rows[:PREVIEW_ROWS]
        if (
            result is not None
            and "confirm_form" not in context
            and not result.has_errors()
            and result.has_validation_errors()
            and result.totals[RowResult.IMPORT_TYPE_NEW]
            + result.totals[RowResult.IMPORT_TYPE_UPDATE]
        ):
            context["confirm_form"] = self.create_confirm_form(request, import_form=context["form"])
        return response

    def add_success_message(self, result, request):
        static_list = getattr(request, "_import_static_list", None)
        totals = result.totals
        messages.success(
            request,
            f"Imported into {static_list}: {totals[RowResult.IMPORT_TYPE_NEW]:,} new, "
            f"{totals[RowResult.IMPORT_TYPE_UPDATE]:,} updated, "
            f"{totals[RowResult.IMPORT_TYPE_INVALID]:,} rows left out.",
        )

    def process_result(self, result, request):
        super().process_result(result, request)
        static_list = getattr(request, "_import_static_list", None)
        if static_list is None:
            return HttpResponseRedirect(reverse("admin:campaigns_staticlist_changelist"))
        LogEntry.objects.log_actions(
            request.user.pk,
            [static_list],
            CHANGE,
            change_message=(
                f"Imported {result.totals[RowResult.IMPORT_TYPE_NEW]} new and "
                f"{result.totals[RowResult.IMPORT_TYPE_UPDATE]} updated members from CSV."
            ),
            single_object=True,
        )
        return HttpResponseRedirect(
            reverse("admin:campaigns_staticlist_change", args=[static_list.pk])
        )
