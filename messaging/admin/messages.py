"""Messages and their edit trail, read-only: found by exact id, conversation or sender, each
linked to its place in the conversation's transcript."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from unfold.admin import ModelAdmin, TabularInline
from unfold.paginator import InfinitePaginator

from communication import content_access
from communication.admin_tools import ExactSearchMixin, ReadOnlyMixin
from messaging import selectors
from messaging.admin.common import metadata_list, person
from messaging.admin.transcript import ENCRYPTED_TEXT, attached
from messaging.models import Attachment, Conversation, Message, MessageEdit, MessageType


def in_transcript(message: Message, text: str) -> str:
    """A link to ``message`` in its conversation's transcript (the page ending with it)."""
    url = reverse("admin:messaging_conversation_change", args=(message.conversation_id,))
    return format_html(
        '<a class="text-primary-600 dark:text-primary-500" href="{}?before={}#message-{}">{}</a>',
        url,
        message.id + 1,
        message.id,
        text,
    )


def conversation_of(message: Message) -> Conversation:
    """The message's conversation, named by its members as the staff list names it."""
    conversation = message.conversation
    # What conversation_staff_list annotates, read here from the message's own annotation.
    setattr(conversation, "participant_names", getattr(message, "conversation_names", None))  # noqa: B010
    return conversation


def previous_text(edit: MessageEdit) -> str:
    """An edit's earlier text; an encrypted message's earlier envelope is ciphertext, not shown."""
    if edit.message.type == MessageType.ENCRYPTED:
        return ENCRYPTED_TEXT
    return edit.previous_content


class MessageEditInline(ReadOnlyMixin, TabularInline):
    model = MessageEdit
    extra = 0
    hide_title = True  # the row's own fields say what it is
    fields = ("action", "previous_text", "by", "edited_at")
    readonly_fields = fields
    verbose_name_plural = "edits and deletion"

    def get_queryset(self, request: HttpRequest) -> QuerySet[MessageEdit]:
        return super().get_queryset(request).select_related("edited_by", "message")

    @admin.display(description="previous content")
    def previous_text(self, obj: MessageEdit) -> str:
        return previous_text(obj)

    @admin.display(description="by")
    def by(self, obj: MessageEdit) -> str:
        return person(obj.edited_by)


class AttachmentInline(ReadOnlyMixin, TabularInline):
    model = Attachment
    extra = 0
    hide_title = True  # the row's own fields say what it is
    fields = ("preview", "content_type", "size", "created_at")
    readonly_fields = fields

    @admin.display(description="file")
    def preview(self, obj: Attachment) -> str:
        item = attached(obj)
        if item.thumb_url:
            return format_html(
                '<a href="{}" target="_blank" rel="noopener"><img class="cs-inline-thumb" '
                'src="{}" alt="{}"></a>',
                item.file_url,
                item.thumb_url,
                item.name,
            )
        return format_html('<a href="{}" download>{}</a>', item.file_url, item.name)


@admin.register(Message)
class MessageAdmin(ExactSearchMixin, ReadOnlyMixin, ModelAdmin):
    list_display = ("__str__", "conversation_name", "type", "sent_at", "edited", "deleted")
    # No filters: none of the columns worth one is indexed, and a rare value (system messages)
    # would have the page read the whole table backwards to fill itself.
    search_fields = ("id", "conversation__id", "sender__external_id")
    search_help_text = "Exact message id, conversation id or sender's user id"
    ordering = ("-id",)
    paginator = InfinitePaginator
    show_full_result_count = False
    list_disable_select_all = True
    fields = (
        "where",
        "sender_name",
        "type",
        "shown",
        "reply_to",
        "sent_at",
        "edited_at",
        "deleted_at",
        "client_id",
        "details",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("messaging/console/conversations.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return selectors.message_staff_list().order_by(*self.get_ordering(request))

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        message = context.get("original")
        if message is not None:
            content_access.access_record(
                content_access.MESSAGE_VIEWED,
                "messaging.message",
                message.pk,
                details={"conversation": str(message.conversation_id)},
            )
        return super().render_change_form(request, context, *args, **kwargs)

    def get_inlines(self, request: HttpRequest, obj: Message | None) -> list[Any]:
        # Only the tables that have rows: most messages were never edited and carry no file.
        if obj is None:
            return []
        inlines: list[Any] = []
        if obj.edited_at or obj.deleted_at:
            inlines.append(MessageEditInline)
        if obj.attachments.exists():
            inlines.append(AttachmentInline)
        return inlines

    @admin.display(description="conversation")
    def conversation_name(self, obj: Message) -> str:
        return str(conversation_of(obj))

    @admin.display(boolean=True)
    def edited(self, obj: Message) -> bool:
        return obj.edited_at is not None

    @admin.display(boolean=True)
    def deleted(self, obj: Message) -> bool:
        return obj.deleted_at is not None

    @admin.display(description="conversation")
    def where(self, obj: Message) -> str:
        return in_transcript(obj, f"{conversation_of(obj)} — see it in the transcript")

    @admin.display(description="sender")
    def sender_name(self, obj: Message) -> str:
        return "System" if obj.type == MessageType.SYSTEM else person(obj.sender)

    @admin.display(description="content")
    def shown(self, obj: Message) -> Any:
        if obj.deleted_at is not None:
            return "Deleted: what it said is kept in its edit trail."
        if obj.type == MessageType.ENCRYPTED:
            return "Encrypted: its content cannot be read here."
        if obj.html:
            # Sanitised by rendering.render when the message was written.
            return format_html('<div class="cs-body">{}</div>', mark_safe(obj.html))  # noqa: S308
        return obj.content or "—"

    @admin.display(description="reply to")
    def reply_to(self, obj: Message) -> str:
        return in_transcript(obj.parent, str(obj.parent)) if obj.parent else "—"

    @admin.display(description="metadata")
    def details(self, obj: Message) -> str:
        return metadata_list(obj.metadata)


@admin.register(MessageEdit)
class MessageEditAdmin(ExactSearchMixin, ReadOnlyMixin, ModelAdmin):
    list_display = ("message", "action", "by", "edited_at")
    list_display_links = ("message",)
    list_filter = ("action",)
    search_fields = ("message__id", "edited_by__external_id")
    search_help_text = "Exact message id or editor's user id"
    list_select_related = ("message__sender", "edited_by")
    ordering = ("-id",)
    paginator = InfinitePaginator
    show_full_result_count = False
    list_disable_select_all = True
    fields = ("where", "action", "previous_text", "previous", "by", "edited_at")
    readonly_fields = fields

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        edit = context.get("original")
        if edit is not None:  # what the message said before: its content as much as the message's
            content_access.access_record(
                content_access.MESSAGE_VIEWED,
                "messaging.message",
                edit.message_id,
                details={"conversation": str(edit.message.conversation_id), "edit": edit.pk},
            )
        return super().render_change_form(request, context, *args, **kwargs)

    @admin.display(description="previous content")
    def previous_text(self, obj: MessageEdit) -> str:
        return previous_text(obj)

    @admin.display(description="by")
    def by(self, obj: MessageEdit) -> str:
        return person(obj.edited_by)

    @admin.display(description="message")
    def where(self, obj: MessageEdit) -> str:
        return in_transcript(obj.message, f"{obj.message} — see it in the transcript")

    @admin.display(description="previous metadata")
    def previous(self, obj: MessageEdit) -> str:
        return metadata_list(obj.previous_metadata)
