"""Conversations for staff: the list, where the agent of a support conversation is changed in
place, and each conversation's page, read-only, with its transcript."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path
from django.utils.html import format_html
from django.utils.safestring import SafeString
from unfold.admin import ModelAdmin, TabularInline
from unfold.paginator import InfinitePaginator
from unfold.widgets import UnfoldAdminSelectWidget

from communication import content_access
from communication.admin_tools import ExactSearchMixin, ReadOnlyMixin
from communication.exceptions import APIError
from communication.models import User
from messaging import attachments, selectors, services
from messaging.admin.common import metadata_list, person
from messaging.admin.transcript import SEE_REMOVED, transcript_context
from messaging.models import Conversation, ConversationType, Participant


def staff(request: HttpRequest) -> User:
    """The staff member acting (``admin_view`` lets no one else through)."""
    return cast(User, request.user)


class ParticipantInline(ReadOnlyMixin, TabularInline):
    model = Participant
    extra = 0
    hide_title = True  # the row's own fields say what it is
    per_page = 20
    fields = ("member", "role", "joined_at", "left_at", "read_up_to", "muted")
    readonly_fields = fields
    verbose_name_plural = "participants"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Participant]:
        return super().get_queryset(request).select_related("user").order_by("joined_at", "id")

    @admin.display(description="member")
    def member(self, obj: Participant) -> str:
        return person(obj.user)

    @admin.display(description="read up to")
    def read_up_to(self, obj: Participant) -> str:
        return f"#{obj.last_read_message_id}" if obj.last_read_message_id else "nothing yet"


# -------------------------------------------------------------------- the agent, from the list


class NotApplicable(forms.Widget):
    """The agent cell of a conversation that has no agent (not a support conversation)."""

    def render(self, name: str, value: Any, attrs: Any = None, renderer: Any = None) -> SafeString:
        return format_html('<span class="cs-muted">{}</span>', "not a support conversation")


class AgentChoiceField(forms.ModelChoiceField):
    """A choice among agents read once for the whole page: a ``ModelChoiceField`` of its own in
    every row would read them once per row (and look each posted one up again)."""

    def __init__(self, agents: Sequence[User], current: User | None, **kwargs: Any) -> None:
        super().__init__(queryset=User.objects.none(), **kwargs)
        people = list(agents)
        if current is not None and current not in people:
            people.append(current)  # no longer an agent, but still this conversation's
        self.by_pk = {str(user.pk): user for user in people}
        # Support conversations are reassigned, never unassigned, from here.
        blank = [] if current is not None else [("", "Unassigned")]
        self.choices = blank + [(str(user.pk), person(user)) for user in people]

    def to_python(self, value: Any) -> User | None:
        if value in self.empty_values:
            return None
        try:
            return self.by_pk[str(value)]
        except KeyError:
            raise ValidationError(
                self.error_messages["invalid_choice"], code="invalid_choice"
            ) from None


class AssigneeForm(forms.ModelForm):
    """A row of the conversations list: the agent of a support conversation."""

    agents: Sequence[User] = ()  # set per request (ConversationAdmin.get_changelist_form)

    class Meta:
        model = Conversation
        fields = ("assigned_agent",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conversation = self.instance
        support = conversation.type == ConversationType.SUPPORT
        current = conversation.assigned_agent if conversation.assigned_agent_id else None
        self.fields["assigned_agent"] = AgentChoiceField(
            self.agents,
            current,
            label="agent",
            required=current is not None,
            disabled=not support,
            widget=UnfoldAdminSelectWidget() if support else NotApplicable(),
            error_messages={
                "required": "Choose another agent: support conversations are "
                "reassigned, not unassigned."
            },
        )


class AgentForm(forms.Form):
    """The agent of the "assign" bulk action."""

    agent = forms.ModelChoiceField(
        queryset=selectors.support_agent_list(), widget=UnfoldAdminSelectWidget()
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["agent"].label_from_instance = person  # type: ignore[attr-defined]


class AssignmentFilter(admin.SimpleListFilter):
    title = "assignment"
    parameter_name = "assignment"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("waiting", "Support, unassigned"), ("assigned", "Assigned to an agent")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> Any:
        if self.value() == "waiting":
            return queryset.filter(type=ConversationType.SUPPORT, assigned_agent__isnull=True)
        if self.value() == "assigned":
            return queryset.filter(assigned_agent__isnull=False)
        return queryset


# ---------------------------------------------------------------------------------- the admin


@admin.register(Conversation)
class ConversationAdmin(ExactSearchMixin, ModelAdmin):
    list_display = ("__str__", "type", "assigned_agent", "last_message", "last_activity_at")
    list_display_links = ("__str__",)
    list_editable = ("assigned_agent",)
    # Types and waiting support conversations are common enough that the newest-first index
    # fills a page quickly; "archived", rare and unindexed, would read the whole table.
    list_filter = ("type", AssignmentFilter)
    search_fields = ("id", "participants__user__external_id")
    search_help_text = "Exact conversation id or participant's user id"
    ordering = ("-last_activity_at",)
    paginator = InfinitePaginator
    show_full_result_count = False
    list_disable_select_all = True
    list_per_page = 50
    # The page shows these and changes none of them (the agent is changed from the list).
    readonly_fields = (
        "name",
        "type",
        "encrypted",
        "assigned_agent",
        "created_by",
        "created_at",
        "last_activity_at",
        "archived",
        "details",
    )
    fieldsets = ((None, {"fields": readonly_fields}),)
    inlines = [ParticipantInline]
    actions = ["assign_agent"]
    change_form_outer_after_template = "admin/messaging/conversation/transcript.html"

    class Media:
        css = {"all": ("messaging/console/conversations.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return selectors.conversation_staff_list().order_by(*self.get_ordering(request))

    # The list's agent column is the only write; a conversation's own page is read-only, and
    # conversations are never added or deleted here.
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="conversation")
    def name(self, obj: Conversation) -> str:
        return str(obj)

    @admin.display(description="metadata")
    def details(self, obj: Conversation) -> str:
        return metadata_list(obj.metadata)

    # --- the agent column

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> type[AssigneeForm]:
        agents = list(selectors.support_agent_list())
        return type("AssigneeForm", (AssigneeForm,), {"agents": agents})

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not isinstance(form, AssigneeForm):
            raise PermissionDenied
        try:
            services.support_assign(
                conversation=obj, agent=form.cleaned_data["assigned_agent"], by=staff(request)
            )
        except APIError as exc:
            self.message_user(request, f"{obj}: {exc.detail}", messages.ERROR)

    @admin.action(description="Assign to an agent", permissions=["change"])
    def assign_agent(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> Any:
        if "apply" in request.POST:
            form = AgentForm(request.POST)
            if form.is_valid():
                done = 0
                for conversation in queryset:
                    try:
                        services.support_assign(
                            conversation=conversation,
                            agent=form.cleaned_data["agent"],
                            by=staff(request),
                        )
                        done += 1
                    except APIError as exc:
                        self.message_user(request, f"{conversation}: {exc.detail}", messages.ERROR)
                if done:
                    self.message_user(request, f"Assigned {done} conversation(s).")
                return None
        else:
            form = AgentForm()
        return render(
            request,
            "admin/messaging/assign_agent.html",
            {
                **self.admin_site.each_context(request),
                "title": "Assign to an agent",
                "form": form,
                "conversations": queryset,
                "opts": self.opts,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            },
        )

    # --- the transcript

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Conversation | None = None,
    ) -> HttpResponse:
        if obj is not None:
            shown = transcript_context(request, obj)
            context.update(shown)
            # Staff reading someone's conversation: one entry per page, before it goes out.
            content_access.access_record(
                content_access.CONVERSATION_VIEWED,
                "messaging.conversation",
                obj.pk,
                details={
                    "messages": len(shown["transcript"]),  # type: ignore[arg-type]
                    "before": shown["transcript_before"],
                },
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "attachments/<uuid:attachment_id>/<str:variant>/",
                self.admin_site.admin_view(self.attachment_view),
                name="messaging_conversation_attachment",
            ),
            *super().get_urls(),
        ]

    def attachment_view(
        self, request: HttpRequest, attachment_id: Any, variant: str
    ) -> FileResponse:
        """A sent attachment (``file``) or its thumbnail (``thumb``), for staff who may see the
        conversation; one of a deleted message only for those who may see deleted content.

        Only the images Pillow re-encoded are shown in the page; anything else is a download,
        so that nothing a user uploaded runs on the console's origin."""
        attachment = selectors.attachment_sent_get(attachment_id)
        if attachment is None or variant not in ("file", "thumb"):
            raise Http404("No such attachment.")
        message = attachment.message
        if message is None:  # attachment_sent_get returns sent ones only
            raise Http404("No such attachment.")
        if not self.has_view_permission(request, message.conversation):
            raise PermissionDenied
        if message.deleted_at is not None and not request.user.has_perm(SEE_REMOVED):
            raise PermissionDenied
        name = attachment.thumbnail if variant == "thumb" else attachment.file
        if not name:
            raise Http404("No such file.")
        content_type = "image/webp" if variant == "thumb" else attachment.content_type
        try:
            handle = attachments.storage().open(name, "rb")
        except FileNotFoundError:
            raise Http404("The file is missing from the storage.") from None
        response = FileResponse(
            handle,
            content_type=content_type,
            as_attachment=content_type not in attachments.PILLOW_FORMATS,
            filename=attachment.original_name if variant == "file" else "",
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        return response
