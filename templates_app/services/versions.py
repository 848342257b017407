"""Versions of a template: draft, edit, submit, approve, reject, archive, roll back.

Every source written is checked here first: it fits the channel and compiles in the sandbox.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone as djtz

from communication.audit import audit_record
from communication.exceptions import APIError
from templates_app import engine, errors, selectors
from templates_app.models import (
    CHANNEL_FIELDS,
    SOURCE_MAX_LENGTHS,
    Template,
    TemplateVariant,
    TemplateVersion,
    VersionStatus,
    normalize_language,
    validate_language,
)
from templates_app.services.common import (
    Actor,
    JSONDict,
    _by_key,
    _invalidate,
    _refuse_fields,
    actor_of,
)
from templates_app.variables import examples, validate

logger = logging.getLogger(__name__)

SOURCE_FIELDS = (
    "subject",
    "html",
    "text",
    "title",
    "body",
    "data",
    "image",
    "deep_link",
    "action_url",
)


def _check_sources(channel: str, sources: JSONDict, *, require: bool) -> JSONDict:
    """The sources fit the channel, are present where required, and compile."""
    required, optional = CHANNEL_FIELDS[channel]
    allowed = set(required) | set(optional)
    problems: dict[str, list[str]] = {}
    for name, value in sources.items():
        if name not in allowed and value not in ("", None, {}):
            problems[name] = [f"A {channel} template has no {name}."]
        limit = SOURCE_MAX_LENGTHS.get(name)
        if limit is not None and isinstance(value, str) and len(value) > limit:
            problems[name] = [f"Ensure this field has no more than {limit} characters."]
    if require:
        for name in required:
            if not (sources.get(name) or "").strip():
                problems[name] = ["This field is required for this channel."]
    if problems:
        raise APIError("Invalid template fields.", code="validation_error", fields=problems)
    cleaned = {name: sources.get(name, {} if name == "data" else "") for name in allowed}
    for name, source in cleaned.items():
        try:
            if name == "data":
                if not isinstance(source, dict):
                    raise APIError(
                        "Invalid template fields.",
                        code="validation_error",
                        fields={"data": ["Expected an object."]},
                    )
                for value in source.values():
                    if isinstance(value, str):
                        engine.check_source(value, html=False)
            elif source:
                engine.check_source(source, html=channel == "email" and name == "html")
        except errors.TemplateError as exc:
            raise type(exc)(exc.message, field=name, line=exc.line) from exc
    return cleaned


def version_check_sources(channel: str, sources: JSONDict) -> JSONDict:
    """Checks sources for ``channel`` as a draft save would (the admin form's validation)."""
    return _check_sources(channel, sources, require=True)


def _variant(template: Template, value: TemplateVariant | str | None) -> TemplateVariant | None:
    if not value:
        return None
    if isinstance(value, TemplateVariant):
        return value
    return _by_key(
        template.variants.all(),
        value,
        "variant",
        "Unknown variant.",
        f"Template {template.key!r} has no variant {value!r}.",
    )


def version_create(
    *,
    template: Template,
    actor: Actor,
    language: str,
    variant: TemplateVariant | str | None = None,
    note: str = "",
    **sources: Any,
) -> TemplateVersion:
    """Writes a draft of ``template`` in ``language``; its sources must compile.

    Raises TemplateSyntaxError / TemplateSecurityError naming the field and line, or
    APIError(validation_error) for fields the channel does not have or lacks.
    """
    unknown = set(sources) - set(SOURCE_FIELDS)
    if unknown:
        raise APIError(
            "Unknown fields.",
            code="validation_error",
            fields={f: ["Unknown field."] for f in sorted(unknown)},
        )
    language = normalize_language(language)
    try:
        validate_language(language)
    except ValidationError as exc:
        raise APIError(
            "Invalid language.", code="validation_error", fields={"language": exc.messages}
        ) from exc
    cleaned = _check_sources(template.channel, sources, require=True)
    variant_obj = _variant(template, variant)
    with transaction.atomic():
        # The template row serialises version numbering (and every change of what is live).
        Template.objects.select_for_update().filter(pk=template.pk).first()
        last = (
            TemplateVersion.objects.filter(template=template)
            .order_by("-number")
            .values_list("number", flat=True)
            .first()
        )
        version = TemplateVersion.objects.create(
            template=template,
            variant=variant_obj,
            language=language,
            number=(last or 0) + 1,
            note=note,
            created_by=actor_of(actor),
            **cleaned,
        )
        _audit(
            version,
            "template_version.create",
            version.created_by,
            language=language,
            fields=sorted(cleaned),
        )
    return version


def version_update(*, version: TemplateVersion, actor: Actor, **changes: Any) -> TemplateVersion:
    """Edits a draft; anything past draft is immutable (write a new version instead)."""
    with transaction.atomic():
        version = selectors.version_get(version.pk, for_update=True)
        if version.status != VersionStatus.DRAFT:
            raise errors.InvalidTransitionError(
                f"Version {version.number} is {version.status}; only drafts can be edited.",
                code="version_immutable",
            )
        note = changes.pop("note", None)
        _refuse_fields(set(changes) - set(SOURCE_FIELDS), "Unknown fields.", "Unknown field.")
        sources = version.source_fields(version.template.channel)
        sources.update(changes)
        cleaned = _check_sources(version.template.channel, sources, require=True)
        for name, value in cleaned.items():
            setattr(version, name, value)
        if note is not None:
            version.note = note
        version.save()
        _audit(
            version, "template_version.update", actor_of(actor), fields=sorted({*cleaned, *changes})
        )
    return version


def _audit(version: TemplateVersion, action: str, actor: str, **changes: Any) -> None:
    """The trail's entry for a version: its template, number and what changed, never its
    sources (field names only)."""
    audit_record(
        action,
        "templates_app.templateversion",
        version.pk,
        changes={"template": str(version.template_id), "number": version.number, **changes},
        actor=actor,
    )


def _transition(version_id: uuid.UUID, *, expect: str, to: str, action: str) -> TemplateVersion:
    version = selectors.version_get(version_id, for_update=True)
    if version.status != expect:
        raise errors.InvalidTransitionError(
            f"Cannot {action} version {version.number}: it is {version.status}, not {expect}.",
        )
    version.status = to
    return version


def _sample_render(version: TemplateVersion) -> None:
    """Renders ``version`` with the schema's examples when they cover every required variable."""
    template = version.template
    required = [v["name"] for v in template.variables if v.get("required", True)]
    sample = examples(template.variables)
    if any(name not in sample for name in required):
        return
    context, _ = validate(template.variables, sample)
    engine.render_fields(
        channel=template.channel,
        sources=version.source_fields(template.channel),
        context=context,
        locale=version.language,
        cache_key=str(version.pk),
    )


def version_submit(
    *, version: TemplateVersion, actor: Actor, note: str | None = None
) -> TemplateVersion:
    """Draft → pending approval. The draft must render with the schema's examples."""
    with transaction.atomic():
        version = _transition(
            version.pk, expect=VersionStatus.DRAFT, to=VersionStatus.PENDING, action="submit"
        )
        _sample_render(version)
        version.submitted_by = actor_of(actor)
        version.submitted_at = djtz.now()
        if note is not None:
            version.note = note
        version.save()
        _audit(
            version,
            "template.submit",
            version.submitted_by,
            status=[VersionStatus.DRAFT, version.status],
        )
    return version


def _make_live(template: Template, version: TemplateVersion) -> TemplateVersion | None:
    """Takes the current live version of the same line and language down, puts ``version`` up.

    The caller holds the template's row lock; the partial unique index stays the last word.
    """
    previous = (
        TemplateVersion.objects.select_for_update()
        .filter(template=template, variant=version.variant, language=version.language, is_live=True)
        .exclude(pk=version.pk)
        .first()
    )
    if previous is not None:
        previous.is_live = False
        previous.save(update_fields=["is_live", "updated_at"])
    version.is_live = True
    version.live_since = djtz.now()
    return previous


def version_approval_refusal(*, version: TemplateVersion, actor: Actor) -> str | None:
    """Why ``actor`` may not approve ``version`` under the four-eyes rule, or None.

    The author and the one who submitted it may not; ``version_approve`` enforces this, and the
    admin asks beforehand so that it can say so instead of offering a button that would fail.
    """
    who = actor_of(actor)
    if who in (version.created_by, version.submitted_by):
        return f"{who} wrote or submitted version {version.number}; someone else must approve it."
    return None


def version_approve(*, version: TemplateVersion, actor: Actor, note: str = "") -> TemplateVersion:
    """Pending → approved and live for its language, replacing the live one.

    Four eyes: the author (or the one who submitted) cannot approve (FourEyesError, 403).
    """
    who = actor_of(actor)
    with transaction.atomic():
        Template.objects.select_for_update().filter(pk=version.template_id).first()
        version = _transition(
            version.pk, expect=VersionStatus.PENDING, to=VersionStatus.APPROVED, action="approve"
        )
        refusal = version_approval_refusal(version=version, actor=who)
        if refusal is not None:
            raise errors.FourEyesError(refusal)
        previous = _make_live(version.template, version)
        version.approved_by = who
        version.approved_at = djtz.now()
        if note:
            version.review_note = note
        version.save()
        _audit(
            version,
            "template.approve",
            who,
            status=[VersionStatus.PENDING, version.status],
            replaces=previous.number if previous else None,
        )
        _invalidate(version.template.key)
    logger.info(
        "template version approved",
        extra={
            "template": version.template.key,
            "version": version.number,
            "language": version.language,
            "replaces": previous.number if previous else None,
            "actor": who,
        },
    )
    return version


def version_reject(*, version: TemplateVersion, actor: Actor, note: str = "") -> TemplateVersion:
    """Pending → draft again, with the reviewer's note."""
    with transaction.atomic():
        version = _transition(
            version.pk, expect=VersionStatus.PENDING, to=VersionStatus.DRAFT, action="reject"
        )
        version.rejected_by = actor_of(actor)
        version.rejected_at = djtz.now()
        version.review_note = note
        version.save()
        _audit(
            version,
            "template.reject",
            version.rejected_by,
            status=[VersionStatus.PENDING, version.status],
        )
    return version


def version_archive(*, version: TemplateVersion, actor: Actor) -> TemplateVersion:
    """An approved version that is not live → archived (no longer offered for rollback)."""
    with transaction.atomic():
        version = _transition(
            version.pk, expect=VersionStatus.APPROVED, to=VersionStatus.ARCHIVED, action="archive"
        )
        if version.is_live:
            raise errors.InvalidTransitionError(
                f"Version {version.number} is live; make another version live first."
            )
        version.save()
        _audit(
            version,
            "template.archive",
            actor_of(actor),
            status=[VersionStatus.APPROVED, version.status],
        )
    return version


def template_rollback(
    *,
    template: Template,
    version_id: uuid.UUID | str,
    actor: Actor,
    language: str | None = None,
) -> TemplateVersion:
    """Makes an earlier approved version of ``template`` live again for its language."""
    who = actor_of(actor)
    with transaction.atomic():
        Template.objects.select_for_update().filter(pk=template.pk).first()
        version = selectors.version_get(version_id, for_update=True)
        if version.template_id != template.pk:
            raise errors.InvalidTransitionError(
                f"That version belongs to {version.template.key!r}, not {template.key!r}.",
                code="version_mismatch",
            )
        if language and normalize_language(language) != version.language:
            raise errors.InvalidTransitionError(
                f"Version {version.number} is in {version.language!r}, not {language!r}.",
                code="language_mismatch",
            )
        if version.status != VersionStatus.APPROVED:
            raise errors.InvalidTransitionError(
                f"Only an approved version can be made live; version {version.number} is "
                f"{version.status}."
            )
        if version.is_live:
            return version
        previous = _make_live(template, version)
        version.save(update_fields=["is_live", "live_since", "updated_at"])
        _audit(
            version,
            "template.rollback",
            who,
            language=version.language,
            replaces=previous.number if previous else None,
        )
        _invalidate(template.key)
    logger.info(
        "template rolled back",
        extra={
            "template": template.key,
            "version": version.number,
            "language": version.language,
            "replaces": previous.number if previous else None,
            "actor": who,
        },
    )
    return version
