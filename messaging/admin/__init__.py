"""The staff console's Conversations section: conversations (the list, with the agent of a support
conversation changeable in place, and each conversation's transcript), messages and their edit
trail. Staff read here; the only write is assigning agents, through ``services.support_assign``."""

from messaging.admin.conversations import ConversationAdmin
from messaging.admin.messages import MessageAdmin, MessageEditAdmin

__all__ = ["ConversationAdmin", "MessageAdmin", "MessageEditAdmin"]
