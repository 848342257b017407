"""The organization tree and its communication policy (``communication.organizations`` writes it).

Imported by ``communication.models``, whose module it extends.
"""

from __future__ import annotations

import re

import pgtrigger
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Concat, Length, Now
from django.db.models.lookups import LessThanOrEqual

# Ids as the identity service names organizations. A "/" would break the materialised path, and
# whitespace or control characters name nothing a token carries.
ORG_ID_MAX_LENGTH = 128
ORG_ID_RE = re.compile(r"^[^/\s\x00-\x1f\x7f]{1,128}$")
# Levels of the tree, counting the top-level organization: keeps the path under the btree
# entry size and bounds the identity lookups of unknown parents.
ORG_MAX_DEPTH = 12

DIRECT_SCOPES = ("organization", "tree", "anyone")


def validate_org_id(value: str) -> None:
    if not isinstance(value, str) or not ORG_ID_RE.match(value):
        raise ValidationError(
            f"An organization id is 1 to {ORG_ID_MAX_LENGTH} characters, without '/', spaces "
            "or control characters."
        )


def validate_role_list(value) -> None:
    """``None`` (inherited) or a list of distinct role names."""
    if value is None:
        return
    if not isinstance(value, list) or not all(
        isinstance(v, str) and 0 < len(v) <= 64 and v.strip() == v for v in value
    ):
        raise ValidationError('Expected a list of role names, like ["manager", "admin"].')
    if len(set(value)) != len(value):
        raise ValidationError("A role is listed twice.")


# Keeps ``path`` (ids from the top-level organization down to this one, joined by "/") whoever
# writes the row, and refuses a parent under the organization itself.
_PATH_SQL = """
DECLARE
    parent_path text;
BEGIN
    IF NEW.parent_id IS NULL THEN
        NEW.path := NEW.id;
    ELSE
        SELECT path INTO parent_path FROM communication_organization WHERE id = NEW.parent_id;
        IF parent_path IS NULL THEN
            RAISE EXCEPTION 'organization % has no parent %', NEW.id, NEW.parent_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF position('/' || NEW.id || '/' IN '/' || parent_path || '/') > 0 THEN
            RAISE EXCEPTION 'organization % cannot be placed under its own descendant %',
                NEW.id, NEW.parent_id USING ERRCODE = 'check_violation';
        END IF;
        NEW.path := parent_path || '/' || NEW.id;
    END IF;
    RETURN NEW;
END;
"""

# A moved organization takes everything under it along (their rows' parent_id is unchanged, so
# the trigger above does not fire for them).
_MOVE_SQL = """
BEGIN
    -- The rows this statement moves fire this trigger too: the first one moved them all.
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;
    END IF;
    UPDATE communication_organization
       SET path = NEW.path || substr(path, length(OLD.path) + 1)
     WHERE starts_with(path, OLD.path || '/');
    RETURN NULL;
END;
"""


class PathField(models.TextField):
    """The materialised path, written by the trigger: an INSERT returns it (``RETURNING``)."""

    db_returning = True


class Organization(models.Model):
    """An organization as the identity service names it, in a tree (``parent``).

    ``path`` is the materialised path (``acme/emea/paris``), in the C collation so that "this
    organization and everything under it" is one range scan of its index. The policy fields are
    overrides: NULL inherits the parent's value (``communication.organizations.organization_policy``).
    """

    id = models.CharField(
        primary_key=True, max_length=ORG_ID_MAX_LENGTH, validators=[validate_org_id]
    )
    name = models.CharField(max_length=255, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    path = PathField(editable=False, default="", db_collation="C")
    direct_scope = models.CharField(
        max_length=16,
        null=True,
        blank=True,
        choices=[(s, s) for s in DIRECT_SCOPES],
        help_text="Whom members may open a direct conversation with or add to a group: their "
        "organization only, their top-level organization's tree, or anyone. Blank: inherited "
        "(tree at the top).",
    )
    group_create_roles = models.JSONField(
        null=True,
        blank=True,
        validators=[validate_role_list],
        help_text='Roles allowed to create group conversations, like ["manager"]; [] lets '
        "everyone. Blank: inherited (everyone at the top).",
    )
    broadcast_roles = models.JSONField(
        null=True,
        blank=True,
        validators=[validate_role_list],
        help_text='Roles allowed to send a notification to a whole organization, like ["admin"]. '
        "Blank: inherited (nobody at the top: services use notifications:broadcast).",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("path",)
        indexes = [models.Index(fields=["path"], name="organization_path")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(id__regex=r"^[^/[:space:][:cntrl:]]+$"),
                name="organization_id_shape",
            ),
            models.CheckConstraint(
                condition=models.Q(path=models.F("id"))
                | models.Q(path__endswith=Concat(models.Value("/"), models.F("id"))),
                name="organization_path_ends_with_id",
            ),
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("path"), ORG_MAX_DEPTH * (ORG_ID_MAX_LENGTH + 1)),
                name="organization_path_length",
            ),
            models.CheckConstraint(
                condition=models.Q(direct_scope__isnull=True)
                | models.Q(direct_scope__in=DIRECT_SCOPES),
                name="organization_direct_scope",
            ),
        ]
        triggers = [
            pgtrigger.Trigger(
                name="organization_path",
                when=pgtrigger.Before,
                operation=pgtrigger.Insert | pgtrigger.UpdateOf("id", "parent_id"),
                func=_PATH_SQL,
            ),
            pgtrigger.Trigger(
                name="organization_move",
                when=pgtrigger.After,
                operation=pgtrigger.Update,
                condition=pgtrigger.Q(old__path__df=pgtrigger.F("new__path")),
                func=_MOVE_SQL,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})" if self.name else self.id

    @property
    def depth(self) -> int:
        """1 for a top-level organization."""
        return self.path.count("/") + 1 if self.path else 1

    def clean(self) -> None:
        if self.parent_id is None or not self.id:
            return
        if self.parent_id == self.id:
            raise ValidationError({"parent": "An organization cannot be its own parent."})
        parent_path = (
            Organization.objects.filter(id=self.parent_id).values_list("path", flat=True).first()
        )
        if parent_path is not None and self.id in parent_path.split("/"):
            raise ValidationError(
                {"parent": f"{self.parent_id} is under {self.id}: that would make a cycle."}
            )
        if parent_path is not None and parent_path.count("/") + 2 > ORG_MAX_DEPTH:
            raise ValidationError({"parent": f"The tree is at most {ORG_MAX_DEPTH} levels deep."})
