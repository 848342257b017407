"""Demo conversations for ``manage.py seed_demo``: a direct one and a group with a thread, each
with a history and read watermarks, written through the messaging services.

A message's ``client_id`` makes its send idempotent and the direct conversation exists once per
pair; the group is found again by its ``metadata["demo"]``. A second run adds nothing.
"""

from __future__ import annotations

from messaging import services
from messaging.models import Conversation, ConversationType

# (sender index, text, index of the thread's root in this list or None)
DIRECT = [
    (0, "Morning! Did the deploy go out?", None),
    (1, "Yes, at 8:30. Dashboards look calm.", None),
    (0, "Great. I'll tell the support team.", None),
    (1, "Thanks. Lunch at noon?", None),
]
GROUP = [
    (1, "Launch checklist is in the shared folder.", None),
    (2, "Translations are done for fr and de.", None),
    (3, "Who owns the status page?", None),
    (0, "I do, I'll update it at launch.", 2),
    (3, "Perfect, thanks!", 2),
    (4, "Marketing email is scheduled for 10:00.", None),
]


def _post(conversation: Conversation, users: list, lines: list, prefix: str) -> int:
    """Posts ``lines``; returns how many were new."""
    ids: list[int] = []
    new = 0
    for index, (sender, text, root) in enumerate(lines):
        message, created = services.message_send(
            user=users[sender],
            conversation_id=conversation.id,
            content=text,
            client_id=f"{prefix}-{index}",
            parent_id=ids[root] if root is not None else None,
        )
        ids.append(message.id)
        new += created
    # Everyone has read all but the last two messages: a little unread for the sender of none.
    for user in {users[sender] for sender, _, _ in lines}:
        services.conversation_mark_read(
            user=user, conversation_id=conversation.id, message_id=ids[-3]
        )
    return new


def seed(users: list, out) -> None:
    direct, _ = services.conversation_create(
        user=users[0], type=ConversationType.DIRECT, participants=[users[1].external_id]
    )
    group = Conversation.objects.filter(metadata__demo="launch").first()
    if group is None:
        group, _ = services.conversation_create(
            user=users[1],
            type=ConversationType.GROUP,
            participants=[u.external_id for u in users],
            title="Launch team",
            metadata={"demo": "launch"},
        )
    new = _post(direct, users, DIRECT, "demo-direct") + _post(group, users, GROUP, "demo-group")
    out.write(f"messaging: 2 conversations ({direct.id}, {group.id}), {new} new messages")
