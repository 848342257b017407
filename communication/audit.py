"""The audit trail's one writer: ``audit_record`` adds an entry in the caller's transaction.

Who acted, from where and under which request id come from the request being served (set by
``RequestIdMiddleware``) or from an explicit ``audit_actor`` block (tasks, websocket consumers,
management commands). Entries are plain inserts without any lock; the chain that makes them
tamper-evident is computed afterwards by a beat task (``audit_chain``), checked by
``audit_verify`` (``manage.py verify_audit``), and shortened only by ``audit_expire``.

The chain: link ``seq`` (an ``AuditSeal``) holds ``sha256(seq, prev_hash, entry)`` over every
column of its entry in canonical JSON, so that editing an entry, a link, or deleting either,
breaks the recomputation at that entry. Links are appended in id order as entries become visible;
an entry whose transaction commits after higher ids were sealed is sealed at a later position.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pgtrigger
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from communication.models import AuditAnchor, AuditEntry, AuditSeal

log = logging.getLogger(__name__)

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


def audit_entries(
    *,
    actor: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Any:
    """Entries matching exact values (each on an index of the table) and a time range, the
    API's and reports' one read of the trail; unordered (the caller pages it)."""
    qs = AuditEntry.objects.all()
    for name, value in (
        ("actor", actor),
        ("object_type", object_type),
        ("object_id", object_id),
        ("action", action),
    ):
        if value is not None:
            qs = qs.filter(**{name: value})
    if since is not None:
        qs = qs.filter(at__gte=since)
    if until is not None:
        qs = qs.filter(at__lt=until)
    return qs


# ------------------------------------------------------------------------------------ the chain

# The hash link 1 follows when no anchor precedes it.
GENESIS = "0" * 64
# Serialises the chainer and the expiry (pg_advisory_xact_lock's key), never the writers.
LOCK_SQL = "hashtext('communication.audit.chain')"
# Links written per statement, and at most per run (the next run carries on).
CHAIN_BATCH = 1000
CHAIN_MAX_PER_RUN = 50_000
# Where the last full verification's outcome is kept for the console's header.
VERIFIED_CACHE_KEY = "audit:last-verify"
LATE_CACHE_KEY = "audit:oldest-open-transaction"
# audit_status counts the entries awaiting a link up to this many (a backlog, not a census).
UNSEALED_COUNT_CAP = 10_000
LATE_MARGIN = dt.timedelta(minutes=15)
LATE_FALLBACK = dt.timedelta(days=1)
_ANCHOR_SALT = "communication.audit.anchor"
_APPEND_ONLY = (
    "communication.AuditEntry:audit_append_only",
    "communication.AuditSeal:audit_seal_append_only",
)


def _canonical(row: Mapping[str, Any]) -> bytes:
    """An entry as the chain sees it: every column, keys sorted, times in UTC. A NULL column is
    left out, so that a nullable column added later leaves the existing links valid."""

    def plain(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).isoformat()
        return value

    content = {name: plain(value) for name, value in row.items() if value is not None}
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def _link_hash(seq: int, prev_hash: str, row: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(f"{seq}\n{prev_hash}\n".encode())
    digest.update(_canonical(row))
    return digest.hexdigest()


@contextmanager
def _append_only_lifted(*uris: str) -> Iterator[None]:
    """Inside the current transaction, the named append-only triggers let rows through.

    What ``pgtrigger.ignore`` does, as a statement of its own: pgtrigger prepends its
    ``set_config`` to each statement, which server-side parameter binding (our database
    settings) refuses as several commands in one prepared statement.
    """
    pgids = [trigger.get_pgid(model) for model, trigger in pgtrigger.registered(*uris)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('pgtrigger.ignore', %s, true)", ["{" + ",".join(pgids) + "}"]
        )
        try:
            yield
        finally:
            cursor.execute("SELECT set_config('pgtrigger.ignore', '{}', true)")


def _remembered(key: str) -> Any:
    """A hint kept in the cache, or None when it is gone or the cache is unreachable: the chain
    and its verification never depend on Redis, only the hints do."""
    try:
        return cache.get(key)
    except Exception:  # a cache outage must not stop the chainer or verify_audit
        log.warning("audit: cache unavailable for %s", key, exc_info=True)
        return None


def _remember(key: str, value: Any) -> None:
    try:
        cache.set(key, value, timeout=None)
    except Exception:  # as above: the hint is lost, nothing else
        log.warning("audit: cache unavailable for %s", key, exc_info=True)


def _columns() -> list[str]:
    return [field.attname for field in AuditEntry._meta.concrete_fields]


def _lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_advisory_xact_lock({LOCK_SQL})")


def _late_since(*, remember: bool) -> dt.datetime:
    """How far back an entry may still be unsealed: an entry's ``at`` is the start of its
    transaction, so one that commits late began no earlier than the oldest transaction open at
    the previous run (kept in the cache) or now. ``LATE_MARGIN`` covers sessions that
    ``pg_stat_activity`` does not show; ``LATE_FALLBACK`` a cache that lost the value."""
    now = timezone.now()
    previous = _remembered(LATE_CACHE_KEY) or now - LATE_FALLBACK
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(xact_start) FROM pg_stat_activity "
            "WHERE datname = current_database() AND xact_start IS NOT NULL"
        )
        oldest_open = cursor.fetchone()[0] or now
    if remember:  # for the next run, once this one's links are committed
        transaction.on_commit(lambda: _remember(LATE_CACHE_KEY, oldest_open))
    return min(previous, oldest_open, now - LATE_MARGIN)


def _unsealed(last_entry_id: int, *, remember: bool = False) -> Any:
    """Entries without a link: those above the last sealed one, and those whose transaction
    began recently enough to have committed after higher ids were sealed. Both halves stay on
    indexes; the test is the seal's unique index."""
    sealed = AuditSeal.objects.filter(entry_id=OuterRef("id"))
    return AuditEntry.objects.filter(
        Q(id__gt=last_entry_id) | Q(at__gte=_late_since(remember=remember)), ~Exists(sealed)
    )


def audit_chain() -> int:
    """Seals the entries committed since the last run, in id order; returns how many.

    Safe with several copies running: an advisory lock makes them take turns (writers never
    take it). Called every few seconds by the beat task ``communication.tasks.audit_chain``.
    """
    sealed = 0
    with transaction.atomic():
        _lock()
        last = AuditSeal.objects.order_by("-seq").values("seq", "hash", "entry_id").first()
        if last is None:
            anchor = _latest_anchor()
            seq, prev = (anchor.seq, anchor.hash) if anchor else (0, GENESIS)
            last_entry_id = 0
        else:
            seq, prev, last_entry_id = last["seq"], last["hash"], last["entry_id"]
        columns = _columns()
        while sealed < CHAIN_MAX_PER_RUN:
            rows = list(
                _unsealed(last_entry_id, remember=True)
                .order_by("id")
                .values(*columns)[:CHAIN_BATCH]
            )
            if not rows:
                break
            links = []
            for row in rows:
                seq += 1
                digest = _link_hash(seq, prev, row)
                links.append(AuditSeal(seq=seq, entry_id=row["id"], hash=digest, prev_hash=prev))
                prev = digest
            AuditSeal.objects.bulk_create(links)
            sealed += len(links)
            last_entry_id = max(last_entry_id, rows[-1]["id"])
    return sealed


# --------------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class AuditVerification:
    """What ``audit_verify`` found: ``ok`` when every link recomputes; otherwise the id of the
    first entry whose link is broken (``first_broken_id``, None when the break is the anchor
    itself) and why."""

    ok: bool
    checked: int
    watermark_seq: int
    watermark_entry_id: int | None
    first_broken_id: int | None = None
    reason: str = ""
    verified_at: dt.datetime | None = None

    def summary(self) -> str:
        if self.ok:
            return (
                f"Audit chain holds: {self.checked} entries checked, "
                f"sealed through #{self.watermark_seq} (entry {self.watermark_entry_id})."
            )
        return f"Audit chain broken at entry {self.first_broken_id}: {self.reason}"


def _anchor_signature(seq: int, digest: str, secret: str) -> str:
    return salted_hmac(
        _ANCHOR_SALT, f"{seq}:{digest}", secret=secret, algorithm="sha256"
    ).hexdigest()


def _anchor_valid(anchor: AuditAnchor) -> bool:
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return any(
        hmac.compare_digest(anchor.signature, _anchor_signature(anchor.seq, anchor.hash, secret))
        for secret in secrets
    )


def _latest_anchor() -> AuditAnchor | None:
    return AuditAnchor.objects.order_by("-seq").first()


def audit_verify(*, batch: int = 2000) -> AuditVerification:
    """Recomputes the whole chain from its anchor (or the start) and reports the first broken
    link: an entry edited or deleted, a link edited or removed, a forged anchor. Entries not
    sealed yet are not part of the chain. Reads the table once, in ``batch``-sized pages."""
    anchor = _latest_anchor()
    seq, prev = 0, GENESIS
    checked = 0
    last_entry_id: int | None = None
    columns = _columns()
    broken: tuple[int | None, str] | None = None
    if anchor is not None:
        seq, prev = anchor.seq, anchor.hash
        if not _anchor_valid(anchor):
            first = AuditSeal.objects.filter(seq__gt=anchor.seq).order_by("seq").first()
            broken = (first.entry_id if first else None, f"anchor at #{anchor.seq} is not signed")
    while broken is None:
        links = list(AuditSeal.objects.filter(seq__gt=seq).order_by("seq")[:batch])
        if not links:
            break
        rows = {
            row["id"]: row
            for row in AuditEntry.objects.filter(id__in=[link.entry_id for link in links]).values(
                *columns
            )
        }
        for link in links:
            row = rows.get(link.entry_id)
            if link.seq != seq + 1:
                broken = (link.entry_id, f"links #{seq + 1} to #{link.seq - 1} are missing")
            elif row is None:
                broken = (link.entry_id, f"entry of link #{link.seq} is missing")
            elif link.prev_hash != prev:
                broken = (link.entry_id, f"link #{link.seq} does not follow #{seq}")
            elif _link_hash(link.seq, prev, row) != link.hash:
                broken = (link.entry_id, f"entry or link #{link.seq} was altered")
            if broken:
                break
            seq, prev, last_entry_id = link.seq, link.hash, link.entry_id
            checked += 1
    result = AuditVerification(
        ok=broken is None,
        checked=checked,
        watermark_seq=seq,
        watermark_entry_id=last_entry_id,
        first_broken_id=broken[0] if broken else None,
        reason=broken[1] if broken else "",
        verified_at=timezone.now(),
    )
    _remember(VERIFIED_CACHE_KEY, result)
    if not result.ok:
        log.error("audit chain broken", extra={"entry_id": result.first_broken_id})
    return result


@dataclass(frozen=True)
class AuditStatus:
    """The chain at a glance, cheap enough for every report and page: the last link, how many
    entries wait for one (up to ``UNSEALED_COUNT_CAP``), when the chainer last sealed, and the
    last full verification (None when none is remembered)."""

    watermark_seq: int
    watermark_entry_id: int | None
    unsealed: int
    last_chained_at: dt.datetime | None
    anchor_seq: int | None
    last_verification: AuditVerification | None


def audit_status() -> AuditStatus:
    last = AuditSeal.objects.order_by("-seq").first()
    anchor = _latest_anchor()
    return AuditStatus(
        watermark_seq=last.seq if last else (anchor.seq if anchor else 0),
        watermark_entry_id=last.entry_id if last else None,
        unsealed=_unsealed(last.entry_id if last else 0)[:UNSEALED_COUNT_CAP].count(),
        last_chained_at=last.sealed_at if last else None,
        anchor_seq=anchor.seq if anchor else None,
        last_verification=_remembered(VERIFIED_CACHE_KEY),
    )


# ------------------------------------------------------------------------------------ retention


def audit_expire(before: dt.datetime, *, batch: int = 5000) -> int:
    """Removes the entries older than ``before``, oldest links first, and returns how many.

    The only path past the tables' append-only triggers. Each batch, in its own short
    transaction: seals what is pending, finds the longest run of links from the chain's start
    whose entries are all older than ``before`` and whose links recompute (an entry sealed late
    keeps the links after it until it expires too; a broken link stays), records an ``audit.expire`` entry, removes those links and entries,
    and leaves a signed ``AuditAnchor`` at the last removed link so the rest still verifies.
    """
    removed = 0
    while True:
        count = _expire_batch(before, batch)
        removed += count
        if count < batch:
            return removed


def _expire_batch(before: dt.datetime, batch: int) -> int:
    audit_chain()
    with transaction.atomic():
        _lock()
        anchor = _latest_anchor()
        start = anchor.seq if anchor else 0
        links = list(
            AuditSeal.objects.filter(seq__gt=start)
            .order_by("seq")
            .values("seq", "hash", "prev_hash", "entry_id")[:batch]
        )
        rows = {
            row["id"]: row
            for row in AuditEntry.objects.filter(
                id__in=[link["entry_id"] for link in links]
            ).values(*_columns())
        }
        # Each removed link is checked first: an anchor must never vouch for a broken link,
        # which stays for verify_audit to report.
        cut = []
        prev = anchor.hash if anchor else GENESIS
        for link in links:
            row = rows.get(link["entry_id"])
            if row is None or row["at"] >= before:
                break
            if link["prev_hash"] != prev or _link_hash(link["seq"], prev, row) != link["hash"]:
                log.error("audit expiry stopped at a broken link", extra={"seq": link["seq"]})
                break
            cut.append(link)
            prev = link["hash"]
        if not cut:
            return 0
        last = cut[-1]
        audit_record(
            "audit.expire",
            "communication.auditentry",
            changes={
                "before": before.isoformat(),
                "removed": len(cut),
                "through_seq": last["seq"],
            },
        )
        with _append_only_lifted(*_APPEND_ONLY):
            AuditSeal.objects.filter(seq__gt=start, seq__lte=last["seq"]).delete()
            AuditEntry.objects.filter(id__in=[link["entry_id"] for link in cut]).delete()
        AuditAnchor.objects.create(
            seq=last["seq"],
            hash=last["hash"],
            signature=_anchor_signature(last["seq"], last["hash"], settings.SECRET_KEY),
            removed=len(cut),
            before=before,
        )
        return len(cut)
