"""The staff console's Notifications pages (the delivery log, the timeline, cancel and resend,
the outbox, "send a test") and this app's People pages, one module per family."""

from notifications.admin import log, outbox, people, webhooks

__all__ = ["log", "outbox", "people", "webhooks"]
