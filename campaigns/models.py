"""Models of campaigns: saved audiences (segments) so far."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now

from communication.ids import uuid7


class Segment(models.Model):
    """A saved filter over users, written in the rule language of ``campaigns.segments``.

    ``rules`` is stored as validated; it is compiled to one query whenever it is counted or sent
    to, so a segment always reflects the users as they are at that moment.
    ``created_by`` is an actor string (``user:<id>``, ``staff:<username>``, ``service:<id>``).
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    rules = models.JSONField()
    created_by = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["-created_at"], name="segment_recent")]

    def __str__(self) -> str:
        return self.name
