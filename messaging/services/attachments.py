"""Uploads: checked, re-encoded and stored before any message refers to them."""

from __future__ import annotations

import uuid

from communication.models import User
from messaging import attachments
from messaging.models import Attachment


def attachment_upload(*, user: User, data: bytes, name: str = "") -> Attachment:
    """Checks, re-encodes and stores an upload; raises 413 (size), 415 (type), 400 (broken)."""
    processed = attachments.process(data)
    attachment_id = uuid.uuid4()
    file_name, thumb_name = attachments.save(attachment_id, processed)
    return Attachment.objects.create(
        id=attachment_id,
        uploader=user,
        file=file_name,
        thumbnail=thumb_name,
        content_type=processed.content_type,
        size=len(processed.content),
        width=processed.width,
        height=processed.height,
        original_name=(name or "")[:255],
    )
