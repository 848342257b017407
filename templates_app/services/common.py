"""What every template verb shares: who acts, and dropping a template's cached sources.

Actors are strings (``user:<external id>``, ``staff:<username>``, ``service:<client id>``)
because services, which have no user row, author templates too.
"""

from __future__ import annotations

from typing import Any, TypeAlias, TypeVar

from django.db import models, transaction
from django.db.models import QuerySet

from communication.auth.tokens import ServicePrincipal
from communication.exceptions import APIError
from templates_app import selectors

_M = TypeVar("_M", bound=models.Model)

# Who acts: a User, a staff user (the admin), a ServicePrincipal or an actor string. Callers pass
# ``request.user`` as it comes; ``actor_of`` tells them apart by their attributes.
Actor: TypeAlias = object
# A template's variable schema (a list of variable specs) and its JSON data, as stored.
JSONDict: TypeAlias = dict[str, Any]


def actor_of(principal: Actor) -> str:
    """The actor string recorded for ``principal`` (a User, a ServicePrincipal or a string)."""
    if isinstance(principal, str):
        return principal
    if isinstance(principal, ServicePrincipal):
        return f"service:{principal.client_id}"
    external_id = getattr(principal, "external_id", None)
    if external_id:
        return f"user:{external_id}"
    username = getattr(principal, "username", None)
    if username:
        return f"staff:{username}"
    raise ValueError(f"cannot tell who {principal!r} is")


def _invalidate(template_key: str) -> None:
    """Drops the cached live sources of ``template_key`` once the transaction commits.

    Deleting before the commit would let a concurrent render cache the old sources again.
    """
    transaction.on_commit(lambda: selectors.bundle_invalidate(template_key))


def _refuse_fields(names: set[str], detail: str, field_detail: str) -> None:
    """Raises a validation APIError naming each of ``names`` (when there are any)."""
    if names:
        raise APIError(
            detail,
            code="validation_error",
            fields={name: [field_detail] for name in sorted(names)},
        )


def _by_key(queryset: QuerySet[_M], key: str, field: str, detail: str, field_detail: str) -> _M:
    """The row of ``queryset`` with ``key``; a validation APIError on ``field`` when none has."""
    found = queryset.filter(key=key).first()
    if found is None:
        raise APIError(detail, code="validation_error", fields={field: [field_detail]})
    return found
