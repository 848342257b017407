"""The right to erasure: one person's data, in every app, as the registry declares it.

``erase`` runs every registry entry in order. Rows are erased in batches by primary key, each
batch in its own short transaction, so that no lock on a hot table (deliveries, messages) is
held for the whole erasure; files go from storage once their rows' transaction has committed.
The request itself keeps only a keyed hash of the identifier it was given.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from communication.audit import audit_record
from communication.compliance import apply, registry
from communication.compliance.keyed import keyed_hash
from communication.compliance.registry import PersonalData, Subject
from communication.models import ErasureRequest, User, normalize_e164

logger = logging.getLogger(__name__)

KINDS = ("user_id", "email", "phone")
# Longest identifier accepted, by kind (the columns that hold them).
MAX_LENGTH = {"user_id": 255, "email": 320, "phone": 32}


class SubjectError(ValueError):
    """An identifier that names no one: ``code`` is the API's machine code."""

    def __init__(self, message: str, code: str = "invalid_subject") -> None:
        super().__init__(message)
        self.code = code


class ErasureError(RuntimeError):
    """An erasure that failed part way: the request is marked ``failed``; running it again
    (``erasure_run``) resumes, since what was erased is found no more."""


def subject_normalise(kind: str, value: Any) -> str:
    """The identifier in the form tables hold it (a lower-cased email, an E.164 number, the user
    id as given). Raises SubjectError."""
    if kind not in KINDS:
        raise SubjectError(f"Unknown subject kind {kind!r}.", "invalid_subject")
    if not isinstance(value, str):
        raise SubjectError(f"{kind} must be a string.", "invalid_subject")
    value = value.strip()
    if not value:
        raise SubjectError(f"{kind} must not be empty.", "invalid_subject")
    if len(value) > MAX_LENGTH[kind]:
        raise SubjectError(f"{kind} is longer than {MAX_LENGTH[kind]} characters.", "too_long")
    if "\x00" in value:
        raise SubjectError("NUL characters are not allowed.", "invalid_subject")
    if kind == "email":
        value = value.lower()
        try:
            validate_email(value)
        except ValidationError as exc:
            raise SubjectError("Not a valid email address.", "invalid_email") from exc
    elif kind == "phone":
        try:
            value = normalize_e164(value, settings.SMS_DEFAULT_REGION or None)
        except ValidationError as exc:
            raise SubjectError("Not a valid phone number.", "invalid_phone") from exc
    return value


def subject_hash(kind: str, normalised: str) -> str:
    return keyed_hash(f"{kind}:{normalised}")


def subject_resolve(
    *, user_id: str | None = None, email: str | None = None, phone: str | None = None
) -> Subject:
    """Everyone and every address one identifier names: the local users it matches (by external
    id, email or phone), their ids, emails and phones, and the identifier itself. Values are
    taken as normalised (``subject_normalise``)."""
    given = [(k, v) for k, v in (("user_id", user_id), ("email", email), ("phone", phone)) if v]
    if len(given) != 1:
        raise SubjectError("Name exactly one of user_id, email or phone.", "invalid_subject")
    kind, value = given[0]
    field = {"user_id": "external_id", "email": "email", "phone": "phone"}[kind]
    users = list(
        User.objects.filter(**{field: value}).values_list("pk", "external_id", "email", "phone")
    )
    if kind == "email":
        # An address stored with capitals still names the same mailbox.
        users += list(
            User.objects.filter(email__iexact=value)
            .exclude(pk__in=[u[0] for u in users])
            .values_list("pk", "external_id", "email", "phone")
        )
    user_ids = {u[1] for u in users if u[1]}
    emails = {u[2].lower() for u in users if u[2]}
    phones = {u[3] for u in users if u[3]}
    {"user_id": user_ids, "email": emails, "phone": phones}[kind].add(value)
    return Subject(
        users=tuple(sorted(u[0] for u in users)),
        user_ids=tuple(sorted(user_ids)),
        emails=tuple(sorted(emails)),
        phones=tuple(sorted(phones)),
    )


def subject_row_count(subject: Subject, limit: int) -> int:
    """How many rows the erasure would touch, counting no further than ``limit`` + 1 (each
    entry's count stops at what is left), so a huge subject costs little to recognise."""
    found = 0
    for entry in registry.entries():
        if entry.rows is None:
            continue
        left = limit + 1 - found
        if left <= 0:
            break
        found += entry.queryset(subject).values("pk")[:left].count()
    return found


def erasure_request_open(kind: str, value: Any, *, requested_by: str) -> tuple[ErasureRequest, str]:
    """A pending request for the identifier (validated and normalised): the request and the
    normalised identifier. Raises SubjectError."""
    normalised = subject_normalise(kind, value)
    request = ErasureRequest.objects.create(
        subject_kind=kind,
        subject_hash=subject_hash(kind, normalised),
        requested_by=requested_by[:300],
    )
    return request, normalised


def erase(subject_kind: str, value: Any, *, requested_by: str) -> ErasureRequest:
    """Erases everything held about the person ``value`` names (a user id, an email address or a
    phone number), in every app; returns the finished request with its counts per registry
    entry. Idempotent: a second erasure finds nothing and says ``already_erased``. Raises
    SubjectError for an identifier that is not one."""
    request, normalised = erasure_request_open(subject_kind, value, requested_by=requested_by)
    return erasure_run(request.pk, normalised)


def erasure_run(request_id: Any, normalised: str) -> ErasureRequest:
    """Runs a pending request (in the request or on the worker). A request already finished is
    returned as it is; one that fails is marked ``failed`` and the error raised again."""
    claimed = ErasureRequest.objects.filter(
        pk=request_id, status__in=[ErasureRequest.Status.PENDING, ErasureRequest.Status.FAILED]
    ).update(status=ErasureRequest.Status.RUNNING)
    request = ErasureRequest.objects.get(pk=request_id)
    if not claimed:
        return request
    kind = request.subject_kind
    try:
        subject = subject_resolve(**{kind: normalised})
        erased = {entry.name: _entry_erase(entry, subject) for entry in registry.entries()}
    except Exception as exc:
        ErasureRequest.objects.filter(pk=request.pk).update(
            status=ErasureRequest.Status.FAILED,
            error=type(exc).__name__[:500],
            finished_at=timezone.now(),
        )
        # A database error's text may quote the values it met (an address in a key conflict):
        # only its type reaches the log and the caller.
        logger.error(
            "erasure failed", extra={"erasure": str(request.pk), "error": type(exc).__name__}
        )
        raise ErasureError(f"erasure {request.pk} failed ({type(exc).__name__})") from None
    nothing = not any(erased.values())
    with transaction.atomic():
        already = (
            nothing
            and ErasureRequest.objects.filter(
                subject_hash=request.subject_hash, status=ErasureRequest.Status.DONE
            )
            .exclude(pk=request.pk)
            .exists()
        )
        request.status = ErasureRequest.Status.DONE
        request.erased = erased
        request.already_erased = already
        request.finished_at = timezone.now()
        request.save(update_fields=["status", "erased", "already_erased", "finished_at"])
        # Counts only: the trail never learns whom the erasure was about.
        audit_record(
            "erasure.run",
            "communication.erasurerequest",
            request.pk,
            changes={
                "kind": kind,
                "erased": {name: n for name, n in erased.items() if n},
                "already_erased": already,
            },
        )
    logger.info(
        "erasure done",
        extra={"erasure": str(request.pk), "rows": sum(erased.values())},
    )
    return request


def _entry_erase(entry: PersonalData, subject: Subject) -> int:
    count = 0
    if entry.rows is not None:
        count += apply.erase_queryset(entry, entry.queryset(subject))
    if entry.eraser is not None:
        count += entry.eraser(subject)
    return count


def erasure_start(kind: str, value: Any, *, requested_by: str) -> tuple[ErasureRequest, str]:
    """The API's entry: erases at once when the subject's rows fit ``ERASURE_SYNC_MAX_ROWS``;
    otherwise leaves the request pending for the worker (enqueued after commit). Returns the
    request (done, or pending) and the normalised identifier. Raises SubjectError."""
    request, normalised = erasure_request_open(kind, value, requested_by=requested_by)
    limit = settings.ERASURE_SYNC_MAX_ROWS
    if subject_row_count(subject_resolve(**{kind: normalised}), limit) <= limit:
        return erasure_run(request.pk, normalised), normalised
    from communication.tasks import erasure_run_task  # noqa: PLC0415

    # The identifier travels in the task's message (the request keeps only its hash).
    transaction.on_commit(lambda: erasure_run_task.delay(str(request.pk), normalised))
    return request, normalised
