"""Writes of campaigns, one module per family of verbs: segments, static lists, campaigns (their
life cycle), runs (slots and audiences) and fan-out."""

from campaigns.services.segments import segment_create, segment_delete, segment_update

__all__ = ["segment_create", "segment_delete", "segment_update"]
