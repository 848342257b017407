"""Provider webhooks, mounted at ``/webhooks/``; each path answers with and without its slash."""

from django.urls import re_path

from notifications.webhooks.esp import MailgunTrackingView, SendGridTrackingView
from notifications.webhooks.views import OvhStatusView, TwilioStatusView

urlpatterns = [
    re_path(r"^twilio/status/?$", TwilioStatusView.as_view(), name="webhook-twilio-status"),
    re_path(r"^ovh/status/?$", OvhStatusView.as_view(), name="webhook-ovh-status"),
    re_path(
        r"^anymail/sendgrid/tracking/?$",
        SendGridTrackingView.as_view(),
        name="webhook-sendgrid-tracking",
    ),
    re_path(
        r"^anymail/mailgun/tracking/?$",
        MailgunTrackingView.as_view(),
        name="webhook-mailgun-tracking",
    ),
]
