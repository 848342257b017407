"""Organization-wide recipients: ``{"organization": id, "include_descendants": bool, "roles":
[...]}`` expanded to the users it addresses, for the send's own recipient resolution (single
sends in :mod:`notifications.services.send`, bulk sends in :mod:`notifications.services.bulk`):
each member becomes a user recipient like ``{"user_id": …}``, and the rules apply as to any.

Members are the users known locally whose ``organization`` is the organization (or, with
``include_descendants``, any under it) and, when the identity service lists members, those it
lists (created locally when new). ``roles``, when given, keeps those holding any of them. A
fixed number of queries whatever the number of members.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import QuerySet

from communication import identity, organizations
from communication import services as core_services
from communication.exceptions import APIError, PayloadTooLargeError, ServiceUnavailableError
from communication.models import User


def is_organization(spec: dict[str, Any]) -> bool:
    return "organization" in spec


def member_spec(user: User, org_id: str) -> dict[str, Any]:
    """The recipient a member's notification records: the user, and the organization that
    reached them."""
    return {"user_id": user.external_id, "via_organization": org_id}


def organization_members(
    specs: Iterable[dict[str, Any]],
    *,
    limit: int,
    too_many: str,
    exclude: Iterable[Any] = (),
) -> list[tuple[User, dict[str, Any]]]:
    """The members the organization ``specs`` address, each once (the first spec reaching
    them gives its spec), leaving out the users of ``exclude`` (primary keys: users the request
    names itself). More than ``limit`` is a 413 saying ``too_many``; an organization neither
    known locally nor to the identity service a 400 ``unknown_organization``."""
    seen = set(exclude)
    members: list[tuple[User, dict[str, Any]]] = []
    for spec in specs:
        for user in _members_of(spec, limit=limit + len(seen)):
            if user.pk not in seen:
                seen.add(user.pk)
                members.append((user, spec))
        if len(members) > limit:
            raise PayloadTooLargeError(too_many)
    return members


def _members_of(spec: dict[str, Any], *, limit: int) -> list[User]:
    org_id = spec["organization"]
    descendants = bool(spec.get("include_descendants"))
    roles = list(spec.get("roles") or [])
    try:
        org = organizations.organization_resolve(org_id)
    except identity.IdentityUnavailableError as exc:
        raise ServiceUnavailableError(
            "The identity service is unavailable and this organization is not known locally."
        ) from exc
    if org is None:
        raise APIError(
            f"No organization {org_id!r}.",
            code="unknown_organization",
            fields={"recipients": [f"Unknown organization {org_id!r}."]},
        )
    local = _local_members(org_id, descendants, roles)
    users = {u.pk: u for u in local.order_by("pk")[: limit + 1]}
    if identity.configured() and len(users) <= limit:
        for user in _listed_members(org_id, descendants, roles, limit=limit):
            users.setdefault(user.pk, user)
    return list(users.values())


def _local_members(org_id: str, descendants: bool, roles: Sequence[str]) -> QuerySet[User]:
    members = User.objects.filter(is_active=True, external_id__isnull=False)
    if descendants:
        members = members.filter(
            organization__in=organizations.organizations_within(org_id).values("id")
        )
    else:
        members = members.filter(organization=org_id)
    if roles:
        members = members.filter(roles__overlap=list(roles))
    return members


def _listed_members(
    org_id: str, descendants: bool, roles: Sequence[str], *, limit: int
) -> list[User]:
    """The members the identity service lists, as local users: those not known here created
    in one statement (their profiles as listed; the others keep theirs until they next sign
    in). None when the service lists nothing for the organization."""
    try:
        listed = identity.organization_members(org_id, include_descendants=descendants, limit=limit)
    except identity.IdentityUnavailableError as exc:
        raise ServiceUnavailableError(
            "The identity service is unavailable: the organization's members cannot be listed."
        ) from exc
    if not listed:
        return []
    wanted = set(roles)
    profiles: dict[str, dict[str, Any]] = {}
    for member in listed:
        profile = core_services.profile_from_claims(member)
        if wanted and not wanted & set(profile.get("roles") or ()):
            continue
        profiles.setdefault(member["sub"], profile)
    if not profiles:
        return []
    User.objects.bulk_create(
        [
            User(external_id=sub, username=f"u-{uuid.uuid4().hex}", **profile)
            for sub, profile in profiles.items()
        ],
        ignore_conflicts=True,  # those known here, and those another request created meanwhile
    )
    return list(User.objects.filter(external_id__in=list(profiles), is_active=True))
