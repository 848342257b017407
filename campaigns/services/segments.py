"""Segments: saved audiences over users."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from campaigns.models import Segment
from campaigns.segments import validate
from communication.audit import audit_record, field_changes
from templates_app.services.common import Actor, actor_of

logger = logging.getLogger(__name__)


def segment_create(*, actor: Actor, name: str, rules: Any, description: str = "") -> Segment:
    """Saves a segment; raises ``ValidationError`` (naming the rule's path) for invalid rules."""
    validate(rules)
    with transaction.atomic():
        segment = Segment.objects.create(
            name=name, description=description, rules=rules, created_by=actor_of(actor)
        )
        audit_record("segment.create", "campaigns.segment", segment.pk, actor=segment.created_by)
    logger.info("segment created", extra={"segment": str(segment.id), "actor": segment.created_by})
    return segment


def segment_update(*, segment: Segment, **changes: Any) -> Segment:
    """Changes a segment's ``name``, ``description`` and/or ``rules`` (validated)."""
    unknown = set(changes) - {"name", "description", "rules"}
    if unknown:
        raise TypeError(f"segment_update() got unexpected fields {sorted(unknown)}")
    if "rules" in changes:
        validate(changes["rules"])
    # As stored: the console's form has set the new values on ``segment`` already.
    before = (
        Segment.objects.filter(pk=segment.pk).values(*changes).first() if changes else {}
    ) or {}
    for field, value in changes.items():
        setattr(segment, field, value)
    with transaction.atomic():
        segment.save(update_fields=[*changes, "updated_at"])
        # Rules name the fields and values a segment matches on: by name only.
        audit_record(
            "segment.update",
            "campaigns.segment",
            segment.pk,
            changes=field_changes(before, changes, personal=("rules",)),
        )
    return segment


@transaction.atomic
def segment_delete(*, segment: Segment) -> None:
    audit_record("segment.delete", "campaigns.segment", segment.pk)
    segment.delete()
