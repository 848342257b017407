from django.urls import re_path

from messaging.api import views

UUID = r"[0-9a-fA-F-]{36}"
CONV = rf"conversations/(?P<conversation_id>{UUID})"

urlpatterns = [
    re_path(r"^conversations/?$", views.ConversationsView.as_view(), name="conversations"),
    re_path(rf"^{CONV}/?$", views.ConversationDetailView.as_view(), name="conversation-detail"),
    re_path(rf"^{CONV}/messages/?$", views.MessagesView.as_view(), name="conversation-messages"),
    re_path(rf"^{CONV}/read/?$", views.ReadView.as_view(), name="conversation-read"),
    re_path(rf"^{CONV}/leave/?$", views.LeaveView.as_view(), name="conversation-leave"),
    re_path(rf"^{CONV}/mute/?$", views.MuteView.as_view(), name="conversation-mute"),
    re_path(
        rf"^{CONV}/participants/?$",
        views.ParticipantsView.as_view(),
        name="conversation-participants",
    ),
    re_path(
        rf"^{CONV}/participants/(?P<user_id>[^/]+)/?$",
        views.ParticipantDetailView.as_view(),
        name="conversation-participant",
    ),
    re_path(
        r"^messages/(?P<message_id>[0-9]+)/?$", views.MessageDetailView.as_view(), name="message"
    ),
    re_path(r"^attachments/?$", views.AttachmentsView.as_view(), name="attachments"),
    re_path(
        rf"^attachments/(?P<attachment_id>{UUID})/?$",
        views.AttachmentDetailView.as_view(),
        name="attachment",
    ),
    re_path(
        rf"^attachments/(?P<attachment_id>{UUID})/download/?$",
        views.AttachmentDownloadView.as_view(),
        name="attachment-download",
    ),
]
