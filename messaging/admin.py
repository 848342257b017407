"""Conversations and messages, searchable, with each message's edit history; support
conversations assignable to agents (users with the ``support_agent`` role)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.shortcuts import render
from unfold.admin import ModelAdmin, TabularInline

from communication.exceptions import APIError
from communication.models import User
from messaging import services
from messaging.models import Attachment, Conversation, Message, MessageEdit, Participant


class ParticipantInline(TabularInline):
    model = Participant
    extra = 0
    fields = ("user", "role", "joined_at", "left_at", "last_read_message", "muted")
    readonly_fields = fields
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


class AgentForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=User.objects.filter(roles__contains=["support_agent"]))


@admin.register(Conversation)
class ConversationAdmin(ModelAdmin):
    list_display = ("id", "type", "title", "assigned_agent", "archived", "last_activity_at")
    list_filter = ("type", "archived")
    search_fields = (
        "=id",
        "title",
        "participants__user__external_id",
        "participants__user__email",
        "messages__content",
    )
    list_select_related = ("assigned_agent",)
    readonly_fields = (
        "id",
        "type",
        "created_by",
        "direct_key",
        "assigned_agent",
        "last_message",
        "last_activity_at",
        "created_at",
        "updated_at",
    )
    fields = ("title", "metadata", "archived") + readonly_fields
    inlines = [ParticipantInline]
    actions = ["assign_agent"]

    def get_search_results(self, request, queryset, search_term):
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), False

    @admin.action(description="Assign selected support conversations to an agent")
    def assign_agent(self, request, queryset):
        if "apply" in request.POST:
            form = AgentForm(request.POST)
            if form.is_valid():
                done = 0
                for conversation in queryset:
                    try:
                        services.support_assign(
                            conversation=conversation, agent=form.cleaned_data["agent"]
                        )
                        done += 1
                    except APIError as exc:
                        self.message_user(request, f"{conversation}: {exc.detail}", messages.ERROR)
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
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            },
        )


class MessageEditInline(TabularInline):
    model = MessageEdit
    extra = 0
    fields = ("action", "previous_content", "edited_by", "edited_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class AttachmentInline(TabularInline):
    model = Attachment
    extra = 0
    fields = ("id", "content_type", "size", "original_name", "created_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Message)
class MessageAdmin(ModelAdmin):
    list_display = ("id", "conversation", "sender", "type", "short", "sent_at", "edited", "deleted")
    list_filter = ("type",)
    search_fields = ("=id", "content", "sender__external_id", "=conversation__id", "=client_id")
    list_select_related = ("conversation", "sender")
    readonly_fields = (
        "conversation",
        "sender",
        "type",
        "content",
        "html",
        "parent",
        "metadata",
        "client_id",
        "sent_at",
        "edited_at",
        "deleted_at",
    )
    inlines = [MessageEditInline, AttachmentInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="content")
    def short(self, obj):
        return (obj.content[:80] + "…") if len(obj.content) > 80 else obj.content

    @admin.display(boolean=True)
    def edited(self, obj):
        return obj.edited_at is not None

    @admin.display(boolean=True)
    def deleted(self, obj):
        return obj.deleted_at is not None


@admin.register(MessageEdit)
class MessageEditAdmin(ModelAdmin):
    list_display = ("message", "action", "edited_by", "edited_at")
    list_filter = ("action",)
    search_fields = ("previous_content", "=message__id", "edited_by__external_id")
    readonly_fields = ("message", "action", "previous_content", "previous_metadata", "edited_by")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
