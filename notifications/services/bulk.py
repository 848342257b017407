"""Bulk sends (``POST /notifications/bulk``): accepting up to ``BULK_MAX_RECIPIENTS``
recipients at once, fanning them out on the ``bulk`` queue, and the batch's status.

Accepting writes the request and one ``BulkRecipient`` per accepted recipient in one statement
before the 202; the bulk worker then turns chunks of them into notifications and deliveries
through :func:`notifications.services.send.recipients_write` (the one writer), deleting each
chunk's rows in the transaction that writes its notifications, so that a recipient is fanned out
once however many workers or retries run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections, transaction
from django.db.models import Count, Exists, OuterRef
from django.urls import reverse

from communication import identity, rows
from communication import services as core_services
from communication.celery import app, queue
from communication.compliance.keyed import lookup_hash
from communication.exceptions import APIError, NotFoundError, PayloadTooLargeError
from communication.fields import EncryptedField
from communication.models import User
from notifications import rendering, resolution
from notifications.categories import category_get
from notifications.models import BulkRecipient, Delivery, NotificationRequest
from notifications.services import audience
from notifications.services.send import idempotent, recipients_write

logger = logging.getLogger(__name__)

# Published by name: tasks import the services.
BULK_FAN_OUT = "notifications.tasks.bulk_fan_out"
# Concurrent identity-service look-ups of user ids we do not know yet.
IDENTITY_LOOKUPS = 8
# A recipient's own ``data``, as JSON text: more is a rejected row.
ROW_DATA_MAX_BYTES = 16 * 1024
# While this key lives a fan-out of the request is queued or running: the sweep leaves it alone.
_RUNNING_KEY = "bulk:fan-out:{}"
_RUNNING_SECONDS = 120

NOT_FINAL = ("scheduled", "held", "queued", "sending")


class Rejected(TypedDict):
    index: int
    code: str
    detail: str


class BulkBody(TypedDict):
    batch_id: str
    status_url: str
    accepted: int
    rejected: list[Rejected]


@dataclass
class Row:
    """One recipient that passed the shape checks: its position, spec (``user_id``, ``email``
    or ``phone``, normalised) and own data."""

    index: int
    spec: dict[str, Any]
    data: dict[str, Any]


@dataclass
class BulkOutcome:
    status_code: int
    body: BulkBody
    replay: bool = False


def too_many(count: int) -> None:
    """The 413 for a request of more than ``BULK_MAX_RECIPIENTS`` recipients."""
    if count > settings.BULK_MAX_RECIPIENTS:
        raise PayloadTooLargeError(
            f"At most {settings.BULK_MAX_RECIPIENTS} recipients per bulk request."
        )


def bulk_send(
    *,
    caller: str,
    payload: dict[str, Any],
    rows_in: Sequence[Row],
    rejected: Sequence[Rejected],
    idempotency_key: str = "",
) -> BulkOutcome:
    """Accepts a bulk request whose recipients the API checked for shape (``rows_in``; the rows
    it refused in ``rejected``).

    Unknown categories and templates refuse the whole request (400, as single sends); an
    unknown user or data failing the template's variables is a rejected row. The request and
    one ``BulkRecipient`` per accepted row are committed before this returns, and the fan-out
    task is enqueued once they are. ``Idempotency-Key`` as single sends: a replay returns the
    first answer."""
    too_many(len(rows_in) + len(rejected))
    if not idempotency_key:
        return BulkOutcome(202, _accept(caller, payload, rows_in, rejected, ""))
    digest = hashlib.sha256(
        json.dumps(
            [payload, [(r.index, r.spec, r.data) for r in rows_in], list(rejected)],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    status_code, body, replay = idempotent(
        caller=caller,
        key=idempotency_key,
        request_hash=digest,
        call=lambda: _accept(caller, payload, rows_in, rejected, idempotency_key),
    )
    return BulkOutcome(status_code, body, replay=replay)


def _accept(
    caller: str,
    payload: dict[str, Any],
    rows_in: Sequence[Row],
    rejected_in: Sequence[Rejected],
    idempotency_key: str,
) -> BulkBody:
    category = category_get(payload.get("category") or "transactional")
    if category is None:
        raise APIError(
            f"No category {payload.get('category')!r}.",
            code="unknown_category",
            fields={"category": ["Unknown category."]},
        )
    requested = payload.get("channels") or "auto"
    escalation = payload.get("escalation") or []
    # An escalation names its channels (the API refuses ``channels`` beside it).
    channels = [step["channel"] for step in escalation] or (
        requested if isinstance(requested, list) else [requested]
    )
    family = payload.get("template") or ""
    schemas: list[list[Any]] = []
    if family:
        candidates = (
            [c for c in category.default_channels if c in resolution.SENDABLE]
            if channels == ["auto"]
            else channels
        )
        templates = rendering.template_keys(family, candidates)
        if not templates:
            raise APIError(
                f"No template {family!r} for {', '.join(candidates) or 'any channel'}.",
                code="unknown_template",
                fields={"template": ["Unknown template."]},
            )
        schemas = rendering.schemas(templates)
    request = NotificationRequest(
        caller=caller,
        idempotency_key=idempotency_key,
        category=category,
        template_key=family,
        content=payload.get("content") or {},
        data=payload.get("data") or {},
        locale=payload.get("locale") or "",
        priority=payload.get("priority") or "low",
        channels=channels,
        bulk=True,
        escalation=escalation,
        cancellation_key=payload.get("cancellation_key") or "",
    )
    rows_in, users = _expand(rows_in, len(rows_in) + len(rejected_in))
    rejected = list(rejected_in)
    # The accepted rows, ``[position, user pk, spec, email, phone, data]`` each.
    accepted: list[list[Any]] = []
    base = request.data
    for row in rows_in:
        user: User | None = None
        user_id = row.spec.get("user_id")
        if user_id:
            found = users.get(user_id)
            if not isinstance(found, User):
                code, detail = found or ("unknown_user", f"Unknown user {user_id!r}.")
                rejected.append({"index": row.index, "code": code, "detail": detail})
                continue
            user = found
        email = row.spec.get("email", "").lower()  # as single sends: the spec keeps its case
        phone = row.spec.get("phone", "")
        if schemas:
            context = rendering.recipient_context(
                {**base, **row.data} if row.data else base, user=user, email=email, phone=phone
            )
            try:
                rendering.validate_data(schemas, context)
            except APIError as exc:
                rejected.append(
                    {
                        "index": row.index,
                        "code": exc.code or "invalid_data",
                        "detail": str(exc.detail),
                    }
                )
                continue
        accepted.append(
            [
                row.index,
                str(user.pk) if user is not None else None,
                row.spec,
                email,
                phone,
                row.data,
            ]
        )
    rejected.sort(key=lambda r: r["index"])
    request.accepted = len(accepted)
    request.rejected = rejected
    with transaction.atomic(savepoint=False):
        if accepted:
            _insert(request, accepted)
            request_id = str(request.id)
            # The rows are what matters: a broker or cache down now leaves them to the sweep.
            _mark_running(request_id)
            transaction.on_commit(lambda: fan_out_enqueue(request_id), robust=True)
        else:
            rows.insert_all([[request]])
    return batch_body(request)


def _insert(request: NotificationRequest, accepted: list[list[Any]]) -> None:
    """The request and its recipients in one statement, the recipients as one JSON array of
    rows: a ``BulkRecipient`` instance per row and the ORM's preparation of each value (or
    psycopg adapting a Python list per column) cost more than the rest of the request. The
    encrypted columns go through their fields' conversion here (hex in the array), their
    keyed hashes beside them."""
    request_sql, request_rows = rows.insert_statement([request])
    sealed = [
        [
            position,
            user_id,
            _sealed("spec", spec),
            _sealed("email", email),
            _sealed("phone", phone),
            lookup_hash(email) if email else "",
            lookup_hash(phone) if phone else "",
            _sealed("data", data),
        ]
        for position, user_id, spec, email, phone, data in accepted
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH r AS ({request_sql}) "  # noqa: S608  (the statement of rows.insert_statement)
            "INSERT INTO notifications_bulkrecipient "
            "(request_id, position, user_id, spec, email, phone, email_hash, phone_hash, data) "
            "SELECT %s, (b->>0)::integer, (b->>1)::uuid, decode(b->>2, 'hex'), "
            "decode(b->>3, 'hex'), decode(b->>4, 'hex'), b->>5, b->>6, decode(b->>7, 'hex') "
            "FROM jsonb_array_elements(%s::jsonb) AS b",
            [request_rows, request.id, json.dumps(sealed, separators=(",", ":"))],
        )


def _sealed(name: str, value: Any) -> str:
    """``value`` as ``BulkRecipient.<name>`` stores it (its field's encryption), in hex."""
    field = cast(EncryptedField, BulkRecipient._meta.get_field(name))
    return (field.encrypted(value) or b"").hex()


def batch_body(request: NotificationRequest) -> BulkBody:
    return {
        "batch_id": str(request.id),
        "status_url": reverse("notifications-batch-detail", kwargs={"batch_id": request.id}),
        "accepted": request.accepted,
        "rejected": list(request.rejected),
    }


def _expand(
    rows_in: Sequence[Row], given: int
) -> tuple[list[Row], dict[str, User | tuple[str, str]]]:
    """The rows with each organization row replaced by a row per member (numbered from
    ``given``, after the request's own rows, with the organization row's data), and the users
    the rows name. A member the request names itself, or reached by two organization rows,
    gets one notification."""
    groups = [r for r in rows_in if audience.is_organization(r.spec)]
    plain = [r for r in rows_in if not audience.is_organization(r.spec)]
    users = _users(plain)
    if not groups:
        return plain, users
    by_spec = {id(r.spec): r for r in groups}
    members = audience.organization_members(
        [r.spec for r in groups],
        limit=settings.BULK_MAX_RECIPIENTS - given,
        exclude=[u.pk for u in users.values() if isinstance(u, User)],
        too_many=f"The organization has more members than the {settings.BULK_MAX_RECIPIENTS} "
        "recipients of a bulk request.",
    )
    for position, (user, spec) in enumerate(members, start=given):
        users[user.external_id or ""] = user
        plain.append(
            Row(position, audience.member_spec(user, spec["organization"]), by_spec[id(spec)].data)
        )
    return plain, users


def _users(rows_in: Sequence[Row]) -> dict[str, User | tuple[str, str]]:
    """The users the rows name, by external id: one query for those we know, the identity
    service (concurrently, at most ``IDENTITY_LOOKUPS`` at once) for the others. A user it
    cannot give is ``(code, detail)``."""
    wanted = list({r.spec["user_id"] for r in rows_in if r.spec.get("user_id")})
    if not wanted:
        return {}
    found: dict[str, User | tuple[str, str]] = {
        u.external_id or "": u for u in User.objects.filter(external_id__in=wanted)
    }
    missing = [w for w in wanted if w not in found]
    if not missing:
        return found
    if not identity.configured():
        # Nobody else to ask: user_resolve would answer "unknown" after a query each.
        return {**found, **{m: ("unknown_user", f"Unknown user {m!r}.") for m in missing}}
    with ThreadPoolExecutor(max_workers=min(IDENTITY_LOOKUPS, len(missing))) as pool:
        for external_id, answer in zip(missing, pool.map(_resolve, missing), strict=True):
            found[external_id] = answer
    return found


def _resolve(external_id: str) -> User | tuple[str, str]:
    try:
        return core_services.user_resolve(external_id)
    except identity.UnknownUserError:
        return ("unknown_user", f"Unknown user {external_id!r}.")
    except identity.IdentityUnavailableError:
        return (
            "identity_unavailable",
            "User not known here and the identity service is unavailable.",
        )
    finally:
        # A pool thread's own connection: closed here, Django would never close it.
        connections.close_all()


# ------------------------------------------------------------------------------- fan-out


def _mark_running(request_id: str) -> None:
    try:
        cache.set(_RUNNING_KEY.format(request_id), 1, _RUNNING_SECONDS)
    except Exception:
        logger.warning("cache unavailable: bulk fan-out %s not marked running", request_id)


def fan_out_enqueue(request_id: str) -> None:
    app.send_task(BULK_FAN_OUT, (request_id,), queue=queue("bulk"), ignore_result=True)


def bulk_fan_out(request_id: str | uuid.UUID, *, batch: int | None = None) -> dict[str, int]:
    """Turns a bulk request's pending recipients into notifications and deliveries, a chunk of
    ``BULK_FANOUT_BATCH`` per transaction, until none is left.

    Each chunk's rows are locked ``SKIP LOCKED``: workers running the same request at once take
    different chunks. A recipient the writer refuses (data failing a template changed since the
    202) is moved from ``accepted`` to ``rejected``. A cancelled request's pending recipients are
    dropped. Safe to run twice: a fanned-out recipient's row is gone."""
    size = batch or settings.BULK_FANOUT_BATCH
    counts = {"written": 0, "refused": 0, "dropped": 0}
    key = _RUNNING_KEY.format(request_id)
    while True:
        _mark_running(str(request_id))
        with transaction.atomic():
            request = (
                NotificationRequest.objects.select_related("category")
                .filter(id=request_id, bulk=True)
                .first()
            )
            if request is None:
                break
            chunk = list(
                BulkRecipient.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("user")
                .filter(request=request)
                .order_by("position")[:size]
            )
            if not chunk:
                break
            BulkRecipient.objects.filter(id__in=[r.id for r in chunk]).delete()
            if request.cancelled_at is not None:
                counts["dropped"] += len(chunk)
                continue
            recipients = [
                resolution.Recipient(
                    spec=r.spec,
                    user=r.user,
                    email=r.email,
                    phone=r.phone,
                    data=r.data or {},
                )
                for r in chunk
            ]
            written, refused = _write(request, recipients)
            counts["written"] += written
            if refused:
                counts["refused"] += len(refused)
                _record_refused(request, chunk, refused)
    try:
        cache.delete(key)
    except Exception:
        logger.warning("cache unavailable: bulk fan-out %s left marked running", request_id)
    return counts


def _write(
    request: NotificationRequest, recipients: list[resolution.Recipient]
) -> tuple[int, list[tuple[int, str, str]]]:
    """Writes a chunk: (notifications written, refused recipients). A recipient whose message
    cannot be rendered (an in-app item of inline content missing a variable) fails the writer
    for the whole chunk: then each is written alone, and those that fail are refused. A
    server-side error (5xx: rendering busy) is raised, and the chunk is retried."""
    try:
        with transaction.atomic():
            written = recipients_write(request, recipients, insert_request=False, strict=False)
        return len(written.notifications), written.refused
    except APIError as exc:
        if exc.status_code >= 500:
            raise
    count, refused = 0, []
    for index, recipient in enumerate(recipients):
        try:
            with transaction.atomic():
                one = recipients_write(request, [recipient], insert_request=False, strict=False)
        except APIError as exc:
            if exc.status_code >= 500:
                raise
            refused.append((index, exc.code or "invalid_data", str(exc.detail)))
            continue
        count += len(one.notifications)
        refused.extend((index, code, detail) for _, code, detail in one.refused)
    return count, refused


def _record_refused(
    request: NotificationRequest,
    chunk: Sequence[BulkRecipient],
    refused: Sequence[tuple[int, str, str]],
) -> None:
    extra = [
        {"index": chunk[i].position, "code": code, "detail": detail} for i, code, detail in refused
    ]
    # In SQL: concurrent chunks of one request each add their own.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_notificationrequest SET accepted = accepted - %s, "
            "rejected = rejected || %s::jsonb WHERE id = %s",
            [len(extra), json.dumps(extra), request.id],
        )


def bulk_resume_stalled(*, limit: int = 100) -> int:
    """Enqueues the fan-out of bulk requests with recipients left and no fan-out queued or
    running (its worker died, its message was lost). Answers how many."""
    with connection.cursor() as cursor:
        # The distinct requests in the (request, position) index, one probe each.
        cursor.execute(
            """
            WITH RECURSIVE r(id) AS (
                (SELECT request_id FROM notifications_bulkrecipient ORDER BY request_id LIMIT 1)
                UNION ALL
                SELECT (SELECT b.request_id FROM notifications_bulkrecipient b
                        WHERE b.request_id > r.id ORDER BY b.request_id LIMIT 1)
                FROM r WHERE r.id IS NOT NULL
            )
            SELECT id FROM r WHERE id IS NOT NULL LIMIT %s
            """,
            [limit],
        )
        ids = [str(row[0]) for row in cursor.fetchall()]
    resumed = 0
    for request_id in ids:
        if cache.add(_RUNNING_KEY.format(request_id), 1, _RUNNING_SECONDS):
            fan_out_enqueue(request_id)
            resumed += 1
    return resumed


# -------------------------------------------------------------------------------- status


class BatchStatus(TypedDict):
    batch_id: str
    accepted: int
    rejected: list[Rejected]
    by_status: dict[str, int]
    done: bool


def batch_status(*, caller: str, batch_id: uuid.UUID | str) -> BatchStatus:
    """A bulk request's progress: its deliveries by status (every status, zeros included) and
    whether it is done (nothing left to fan out, no delivery still on its way). Another
    caller's batch, or a request that is not a batch, is a 404."""
    request = (
        NotificationRequest.objects.filter(id=batch_id, caller=caller, bulk=True)
        .annotate(pending=Exists(BulkRecipient.objects.filter(request=OuterRef("pk"))))
        .only("id", "accepted", "rejected")
        .first()
    )
    if request is None:
        raise NotFoundError("No such batch.")
    by_status = dict.fromkeys(Delivery.Status.values, 0)
    for status, n in (
        Delivery.objects.filter(notification__request_id=request.id)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    ):
        by_status[status] = n
    pending = bool(request.pending)
    return {
        "batch_id": str(request.id),
        "accepted": request.accepted,
        "rejected": list(request.rejected),
        "by_status": by_status,
        "done": not pending and not any(by_status[s] for s in NOT_FINAL),
    }
