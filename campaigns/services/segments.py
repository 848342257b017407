"""Segments: saved audiences over users."""

from __future__ import annotations

import logging
from typing import Any

from campaigns.models import Segment
from campaigns.segments import validate
from templates_app.services.common import Actor, actor_of

logger = logging.getLogger(__name__)


def segment_create(*, actor: Actor, name: str, rules: Any, description: str = "") -> Segment:
    """Saves a segment; raises ``ValidationError`` (naming the rule's path) for invalid rules."""
    validate(rules)
    segment = Segment.objects.create(
        name=name, description=description, rules=rules, created_by=actor_of(actor)
    )
    logger.info("segment created", extra={"segment": str(segment.id), "actor": segment.created_by})
    return segment


def segment_update(*, segment: Segment, **changes: Any) -> Segment:
    """Changes a segment's ``name``, ``description`` and/or ``rules`` (validated)."""
    unknown = set(changes) - {"name", "description", "rules"}
    if unknown:
        raise TypeError(f"segment_update() got unexpected fields {sorted(unknown)}")
    if "rules" in changes:
        validate(changes["rules"])
    for field, value in changes.items():
        setattr(segment, field, value)
    segment.save(update_fields=[*changes, "updated_at"])
    return segment


def segment_delete(*, segment: Segment) -> None:
    segment.delete()
