"""Organizations: the tree, its communication policy, and keeping it in step with the identity
service. The enforcement in messaging and the organization-wide sends call these; nothing here
decides for them beyond ``may_contact``.

Reads:
- ``organizations_within(org_id)``: a QuerySet of the organization and everything under it, one
  range scan of the path index (compose it: ``User.objects.filter(organization__in=
  organizations_within(x).values("id"))``).
- ``lineage(org_id)`` / ``ancestors(org_id)`` / ``top_level(org_id)``: up the tree, one query.
- ``organization_policy(org_id) -> Policy``: the effective policy, one query.
- ``may_contact(initiator, other) -> (allowed, rule)``: ``direct_scope`` of the initiator's
  organization.

Writes:
- ``organization_save``: the console's (and any staff tool's) one way to write an organization.
- ``organization_resolve(org_id)``: the local row, created from the identity service (with its
  unknown parents) when missing. ``organization_sync_claim`` runs it for a token's claim, off the
  hot path.

The path itself is kept by a database trigger (``org_models``), whoever writes the row.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet, Subquery, Value
from django.db.models.functions import Concat

from communication import identity
from communication.audit import audit_record, field_changes
from communication.circuit import CircuitOpenError
from communication.org_models import (
    DIRECT_SCOPES,
    ORG_ID_RE,
    ORG_MAX_DEPTH,
    Organization,
    validate_role_list,
)

logger = logging.getLogger(__name__)

# What applies where no organization on the way up says otherwise: one organization's defaults.
DEFAULT_DIRECT_SCOPE = "tree"
POLICY_FIELDS = ("direct_scope", "group_create_roles", "broadcast_roles")
# After the identity service failed to answer for an organization, tokens naming it do not ask
# again for this long (its breaker and retries already bound each attempt).
LOOKUP_BACKOFF_SECONDS = 30


class Policy(NamedTuple):
    """The communication policy in force for an organization.

    ``group_create_roles`` empty: everyone may create groups. ``broadcast_roles`` empty: no user
    may address a whole organization (services use the ``notifications:broadcast`` scope).
    ``source`` names, per field, the organization whose value applies (None: the default).
    """

    direct_scope: str = DEFAULT_DIRECT_SCOPE
    group_create_roles: tuple[str, ...] = ()
    broadcast_roles: tuple[str, ...] = ()
    source: dict[str, str | None] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "direct_scope": self.direct_scope,
            "group_create_roles": list(self.group_create_roles),
            "broadcast_roles": list(self.broadcast_roles),
        }

    def allows_group_create(self, roles) -> bool:
        return not self.group_create_roles or bool(set(self.group_create_roles) & set(roles))

    def allows_broadcast(self, roles) -> bool:
        return bool(set(self.broadcast_roles) & set(roles))


def valid_id(org_id: Any) -> bool:
    """Whether ``org_id`` could name an organization (callers answer 404 when not)."""
    return isinstance(org_id, str) and bool(ORG_ID_RE.match(org_id))


# ------------------------------------------------------------------------------------ reads


def organizations_within(org_id: str) -> QuerySet[Organization]:
    """The organization ``org_id`` and every one under it, as one query.

    ``path`` is in the C collation, where the descendants of ``p`` are exactly the paths between
    ``p/`` and ``p0`` ("0" follows "/"): a range scan of the path index, with ``p`` read by an
    uncorrelated subquery PostgreSQL runs once. Empty for an unknown organization.
    """
    root = Subquery(Organization.objects.filter(id=org_id).order_by().values("path")[:1])
    return Organization.objects.filter(
        Q(path=root) | Q(path__gt=Concat(root, Value("/")), path__lt=Concat(root, Value("0")))
    )


# The path's ids come from a subquery PostgreSQL runs first, in the ids' collation (the path's
# is C): the ancestors are then primary key look-ups, not a scan of the table.
LINEAGE_SQL = (
    "SELECT * FROM communication_organization WHERE id = ANY(("
    "SELECT string_to_array(path COLLATE \"default\", '/') FROM communication_organization"
    " WHERE id = %s)::text[])"
)


def lineage(org_id: str) -> list[Organization]:
    """The organization ``org_id`` and its ancestors, from the top-level one down, in one query
    (its path names them all). Empty for an organization not known locally."""
    rows = Organization.objects.raw(LINEAGE_SQL, [org_id])
    return sorted(rows, key=lambda org: org.depth)


def ancestors(org_id: str) -> list[Organization]:
    """The ancestors of ``org_id``, from the top-level organization down to its parent."""
    return lineage(org_id)[:-1]


def top_level(org_id: str) -> str | None:
    """The id of the top-level organization ``org_id`` is under (itself at the top); None when
    ``org_id`` is not known locally."""
    path = Organization.objects.filter(id=org_id).values_list("path", flat=True).first()
    return path.split("/", 1)[0] if path else None


def _policy_of(chain: list[Organization]) -> Policy:
    """The nearest value of each field up ``chain`` (top-level first)."""
    values: dict[str, Any] = {}
    source: dict[str, str | None] = dict.fromkeys(POLICY_FIELDS)
    for org in chain:
        for field in POLICY_FIELDS:
            value = getattr(org, field)
            if value is not None:
                values[field] = value
                source[field] = org.id
    return Policy(
        direct_scope=values.get("direct_scope", DEFAULT_DIRECT_SCOPE),
        group_create_roles=tuple(values.get("group_create_roles", ())),
        broadcast_roles=tuple(values.get("broadcast_roles", ())),
        source=source,
    )


def organization_policy(org_id: str | None) -> Policy:
    """The policy in force for members of ``org_id``: each field from the organization itself
    or, where it inherits (NULL), from its nearest ancestor that sets it, else the default. One
    query. An organization not known locally (or none) gets the defaults."""
    if not org_id:
        return Policy(source=dict.fromkeys(POLICY_FIELDS))
    return _policy_of(lineage(org_id))


def organization_get_for(principal_org: str | None, org_id: str) -> Organization | None:
    """The organization ``org_id`` if a member of ``principal_org`` may see it (it is that
    organization or under it, so the member belongs to it or to one of its ancestors), else
    None."""
    if not principal_org or not valid_id(org_id):
        return None
    return organizations_within(principal_org).filter(id=org_id).first()


# ------------------------------------------------------------------------------- may_contact


def may_contact(initiator, other) -> tuple[bool, str]:
    """Whether ``initiator`` may open a direct conversation with ``other`` or add them to a
    group, by the ``direct_scope`` of the initiator's organization; with the rule that decided
    (for a refusal's ``detail``).

    - No organization is known locally at all: a single-organization deployment, where the
      service decides nothing (rule ``no_organizations``), as before organizations existed.
    - ``anyone``: allowed.
    - ``organization``: both in the same organization.
    - ``tree`` (default): both under the same top-level organization.
    - A user without an organization (or whose organization is not known locally) is an
      organization of their own with the default policy: under ``organization`` or ``tree``,
      users without one reach only each other, and people in organizations reach them only
      under ``anyone``.

    Indexed look-ups: the initiator's lineage, the other's top level under ``tree``, and whether
    any organization exists when the initiator's is not known locally.
    """
    if initiator.pk == other.pk:
        return True, "self"
    a_org, b_org = initiator.organization or "", other.organization or ""
    chain = lineage(a_org) if a_org else []
    if not chain and not Organization.objects.exists():
        return True, "no_organizations"
    policy = _policy_of(chain)
    scope = policy.direct_scope
    rule = f"direct_scope={scope}"
    if scope == "anyone":
        return True, rule
    if scope == "organization" or not a_org or not b_org:
        return a_org == b_org, rule
    a_top = chain[0].id if chain else a_org
    b_top = top_level(b_org) or b_org
    return a_top == b_top, rule


# ------------------------------------------------------------------------------------ writes


def _check_policy(org: Organization) -> None:
    if org.direct_scope is not None and org.direct_scope not in DIRECT_SCOPES:
        raise ValidationError({"direct_scope": f"One of {', '.join(DIRECT_SCOPES)}."})
    for field in ("group_create_roles", "broadcast_roles"):
        validate_role_list(getattr(org, field))


@transaction.atomic
def organization_save(
    *, organization: Organization, before: dict[str, Any] | None = None
) -> Organization:
    """Creates or changes an organization (staff in the console). Refuses, with ValidationError,
    a parent under the organization itself, a tree deeper than ``ORG_MAX_DEPTH`` and a malformed
    policy; the database refuses them too. Moving it moves everything under it (the trigger).

    ``before``: the stored values (``organization_snapshot``) for the audit entry, None for a
    new organization. The entry keeps the name, parent and policy before and after.
    """
    organization.full_clean(exclude=["path"])  # the trigger writes it
    _check_policy(organization)
    organization.save()
    organization.refresh_from_db(fields=["path"])
    after = organization_snapshot(organization)
    audit_record(
        "organization.create" if before is None else "organization.change",
        "communication.organization",
        organization.pk,
        changes=field_changes(before, after),
    )
    return organization


def organization_snapshot(organization: Organization) -> dict[str, Any]:
    """The audited values of ``organization``."""
    return {
        "name": organization.name,
        "parent": organization.parent_id,
        **{f: getattr(organization, f) for f in POLICY_FIELDS},
    }


def organization_resolve(org_id: str, *, _depth: int = 0) -> Organization | None:
    """The local organization ``org_id``; when it is not known locally and the identity service
    is configured, it is looked up there (cached in Redis) and created, with its unknown parents
    up to ``ORG_MAX_DEPTH`` levels (a deeper or cyclic answer ends the chain: the last one known
    becomes top-level).

    None for an id the identity service does not know (or with no identity service). Raises
    ``identity.IdentityUnavailableError`` when it cannot answer.
    """
    local = Organization.objects.filter(id=org_id).first() if valid_id(org_id) else None
    if local is not None or not valid_id(org_id) or not identity.configured():
        return local
    # The chain from org_id up to the first organization known locally (or the top).
    chain: list[dict[str, Any]] = []
    parent: Organization | None = None
    current: str | None = org_id
    while current is not None:
        if len(chain) >= ORG_MAX_DEPTH or any(c["id"] == current for c in chain):
            logger.warning("identity organization chain too deep or cyclic", extra={"org": org_id})
            break
        data = identity.organization_get(current)
        if data is None:
            if not chain:
                return None
            logger.warning("identity names an unknown parent organization")
            break
        chain.append({"id": current, "name": str(data.get("name") or "")[:255]})
        parent_id = data.get("parent_id")
        if not valid_id(parent_id):
            break
        parent = Organization.objects.filter(id=parent_id).first()
        if parent is not None:
            break
        current = parent_id
    # Created from the top down, each under the one above it; a chain that would make the tree
    # too deep under the local parent stands on its own.
    parent_id = parent.id if parent is not None else None
    if parent is not None and parent.depth + len(chain) > ORG_MAX_DEPTH:
        parent_id = None
    created = None
    for entry in reversed(chain):
        created = _create_from_identity(entry["id"], entry["name"], parent_id)
        parent_id = created.id
    return created


def _create_from_identity(org_id: str, name: str, parent_id: str | None) -> Organization:
    try:
        with transaction.atomic():
            org = Organization.objects.create(id=org_id, name=name, parent_id=parent_id)
            audit_record(
                "organization.import",
                "communication.organization",
                org_id,
                changes={"parent": [None, parent_id]},
                actor="system",
            )
            return org
    except IntegrityError:
        # Another request imported it meanwhile.
        return Organization.objects.get(id=org_id)


# Ids this process checked lately, until when: a token naming one costs no query. The expiry
# lets an organization created or deleted since be seen; the table is bounded, cleared when full.
_checked: dict[str, float] = {}
_CHECKED_MAX = 10_000
_CHECKED_SECONDS = 300.0


def organization_sync_claim(org_id: str) -> None:
    """Makes sure the organization a token names is known locally (authentication calls it).

    Without an identity service it does nothing (staff keep the tree in the console). Otherwise
    an id this process checked in the last minutes costs nothing; an unknown one is looked up
    once (``organization_resolve``). Failures are logged, never raised: authentication goes on,
    and tokens naming it try again after a short back-off.
    """
    if not org_id or not identity.configured() or not valid_id(org_id):
        return
    if _checked.get(org_id, 0.0) > time.monotonic():
        return
    backoff = f"identity:org-retry:{org_id}"
    try:
        if cache.get(backoff):
            return
    except Exception:
        pass
    try:
        organization_resolve(org_id)
    except (identity.IdentityUnavailableError, CircuitOpenError):
        logger.warning("identity service unavailable for an organization lookup")
        try:
            cache.set(backoff, 1, LOOKUP_BACKOFF_SECONDS)
        except Exception:
            pass
        return
    if len(_checked) >= _CHECKED_MAX:
        _checked.clear()
    _checked[org_id] = time.monotonic() + _CHECKED_SECONDS
