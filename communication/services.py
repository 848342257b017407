"""Verbs of the core app: keeping local users in step with the identity service."""

from __future__ import annotations

import logging
import uuid
import zoneinfo
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from communication import identity
from communication.audit import audit_record
from communication.models import Category, User, normalize_e164

logger = logging.getLogger(__name__)

# Token claim (or identity API field) -> User field. The first present claim wins.
PROFILE_CLAIMS: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "phone": ("phone_number", "phone"),
    "name": ("name",),
    "locale": ("locale",),
    "timezone": ("zoneinfo", "timezone"),
    "organization": ("organization", "org"),
    "roles": ("roles",),
    "attributes": ("attributes",),
}


def _clean(field: str, value: Any) -> Any:
    """A claim's value as the field stores it, or ValidationError."""
    if field == "roles":
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list):
            raise ValidationError("roles must be a list")
        return sorted({str(v)[:64] for v in value})
    if field == "attributes":
        if not isinstance(value, dict):
            raise ValidationError("attributes must be an object")
        return value
    if value is None:
        raise ValidationError(f"{field} is null")
    value = str(value).strip()
    if field == "phone" and value:
        return normalize_e164(value)
    if field == "timezone" and value:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValidationError(f"unknown time zone {value!r}") from exc
    limits = {"email": 254, "name": 255, "locale": 35, "timezone": 64, "organization": 255}
    return value[: limits.get(field, 255)]


def profile_from_claims(claims: dict[str, Any]) -> dict[str, Any]:
    """The profile fields that ``claims`` carries; absent or unusable claims are left out."""
    profile: dict[str, Any] = {}
    for field, names in PROFILE_CLAIMS.items():
        for name in names:
            if name in claims:
                try:
                    profile[field] = _clean(field, claims[name])
                except ValidationError as exc:
                    # The claim's name and the error's kind: its message quotes the value (a
                    # phone number, an address), which logs never carry.
                    logger.warning(
                        "ignoring unusable claim",
                        extra={"claim": name, "error": exc.error_list[0].code or "invalid"},
                    )
                break
    return profile


def user_sync(*, external_id: str, profile: dict[str, Any]) -> User:
    """Creates or refreshes the local user ``external_id`` from ``profile``.

    Only the fields present in ``profile`` are written: a claim absent from a token never blanks a
    stored field. No write happens when nothing changed (this runs on every authenticated request).
    """
    user = User.objects.filter(external_id=external_id).first()
    if user is None:
        try:
            with transaction.atomic():
                return User.objects.create(
                    external_id=external_id, username=f"u-{uuid.uuid4().hex}", **profile
                )
        except IntegrityError:
            # Two first requests of one user at once: the other one created the row.
            user = User.objects.get(external_id=external_id)
    changed = [f for f, v in profile.items() if getattr(user, f) != v]
    if changed:
        for f in changed:
            setattr(user, f, profile[f])
        user.save(update_fields=changed + ["updated_at"])
    return user


def user_sync_from_claims(claims: dict[str, Any]) -> User:
    return user_sync(external_id=str(claims["sub"]), profile=profile_from_claims(claims))


def user_update_local(*, external_id: str, staff: bool | None = None, **profile: Any) -> User:
    """Creates or updates a user from explicit values (``issue_token``, admin tooling).

    ``None`` values are left as stored.
    """
    cleaned: dict[str, Any] = {}
    for field, value in profile.items():
        if value is not None:
            cleaned[field] = _clean(field, value)
    user = user_sync(external_id=external_id, profile=cleaned)
    if staff is not None and user.is_staff != staff:
        with transaction.atomic():
            user.is_staff = staff
            user.save(update_fields=["is_staff", "updated_at"])
            audit_record(
                "user.staff_grant" if staff else "user.staff_revoke",
                "communication.user",
                user.pk,
                changes={"is_staff": [not staff, staff]},
            )
    return user


def user_resolve(external_id: str) -> User:
    """The local user ``external_id``, looked up through the identity service when not known.

    A known user is refreshed from the identity profile when one is available (cached in Redis, so
    this costs no call most of the time); when the identity service is down, the local row answers.
    Raises ``identity.UnknownUserError`` for a user neither we nor the identity service know, and
    ``identity.IdentityUnavailableError`` when the user is not local and the service cannot answer.
    """
    local = User.objects.filter(external_id=external_id).first()
    if not identity.configured():
        if local is None:
            raise identity.UnknownUserError(external_id)
        return local
    try:
        profile = identity.profile_get(external_id)
    except identity.IdentityUnavailableError:
        if local is not None:
            return local
        raise
    if profile is None:
        if local is not None:
            return local
        raise identity.UnknownUserError(external_id)
    profile = {k: v for k, v in profile.items() if k != "sub"}
    return user_sync(external_id=external_id, profile=profile_from_claims(profile))


@transaction.atomic
def category_save(
    *, category: Category, changed: list[str], caps_before: dict[str, Any] | None
) -> Category:
    """Saves a category staff edited in the console. A change of its frequency caps is audited
    with the caps before and after (what people were promised, and since when); the console's
    own entry names only the fields."""
    category.save()
    # The form may call an unchanged JSON value changed (its text differs): compare the values.
    if "frequency_caps" in changed and (caps_before or {}) != (category.frequency_caps or {}):
        audit_record(
            "category.frequency_caps",
            "communication.category",
            category.pk,
            changes={
                "fields": sorted(changed),
                "frequency_caps": [caps_before or {}, category.frequency_caps],
            },
        )
    return category
