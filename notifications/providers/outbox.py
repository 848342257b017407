"""The development outbox: a channel with no configured provider "sends" here."""

from __future__ import annotations

from typing import Any

from notifications.models import OutboxMessage
from notifications.providers.base import Message, Provider, SendResult


class OutboxProvider(Provider):
    name = "outbox"
    idempotent = True

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        super().__init__(alias, options)
        self.channel = options.get("CHANNEL", "")

    def send(self, message: Message) -> SendResult:
        row = OutboxMessage.objects.create(
            delivery_id=message.delivery_id or None,
            channel=message.channel,
            to=message.to,
            subject=message.subject or message.title,
            text=message.text,
            html=message.html,
            payload={
                "data": message.data,
                "headers": message.headers,
                "category": message.category,
            },
        )
        return SendResult(provider_message_id=f"outbox-{row.id}", status="delivered")
