"""The audit trail's one writer: ``audit_record`` adds an entry in the caller's transaction.

Who acted, from where and under which request id come from the request being served (set by
``RequestIdMiddleware``) or from an explicit ``audit_actor`` block (tasks, websocket consumers,
management commands). Entries are plain inserts without any lock; the chain that makes them
tamper-evident is computed afterwards by a beat task.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from communication.models import AuditEntry

# The HTTP request being served, or an explicit actor: (actor, ip).
_request: contextvars.ContextVar[Any] = contextvars.ContextVar("audit_request", default=None)
_actor: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar(
    "audit_actor", default=None
)

SYSTEM = "system"


def actor_of(principal: Any) -> str:
    """The actor string of a request's user: a service, an identity-service user or staff."""
    if principal is None or not getattr(principal, "is_authenticated", False):
        return "anonymous"
    if getattr(principal, "is_service", False):
        return f"service:{principal.client_id}"
    external_id = getattr(principal, "external_id", None)
    if external_id:
        return f"user:{external_id}"
    return f"staff:{principal.get_username()}"


def bind_request(request: Any) -> contextvars.Token:
    """Called by the request middleware: the request whose user and address entries name."""
    return _request.set(request)


def unbind_request(token: contextvars.Token) -> None:
    _request.reset(token)


@contextmanager
def audit_actor(actor: str, ip: str | None = None) -> Iterator[None]:
    """Entries written inside name ``actor`` (a consumer's user, a command, a task)."""
    token = _actor.set((actor, ip))
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> tuple[str, str | None]:
    explicit = _actor.get()
    if explicit is not None:
        return explicit
    request = _request.get()
    if request is None:
        return SYSTEM, None
    from communication.ratelimit import client_ip  # noqa: PLC0415

    ip = client_ip(request)
    return actor_of(getattr(request, "user", None)), (None if ip == "unknown" else ip)


def field_changes(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    *,
    personal: Iterable[str] = (),
) -> dict[str, Any]:
    """The summary an entry keeps: ``{field: [before, after]}`` for the fields that changed, and
    ``{field: "changed"}`` for a personal one, whose values never reach the trail."""
    before, after = before or {}, after or {}
    personal = set(personal)
    out: dict[str, Any] = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        out[name] = "changed" if name in personal else [_plain(old), _plain(new)]
    return out


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value][:50]
    return str(value)[:200]


def audit_record(
    action: str,
    object_type: str,
    object_id: Any = "",
    *,
    changes: Mapping[str, Any] | None = None,
    actor: str | None = None,
) -> AuditEntry:
    """Adds an entry in the current transaction: it commits or rolls back with the change."""
    who, ip = current_actor()
    from communication.logging import request_id_var  # noqa: PLC0415

    rid = request_id_var.get()
    return AuditEntry.objects.create(
        actor=(actor or who)[:300],
        action=action,
        object_type=object_type,
        object_id=str(object_id)[:255],
        changes=dict(changes or {}),
        ip=ip,
        request_id="" if rid == "-" else rid,
    )
