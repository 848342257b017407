"""The verbs of templates: create, draft, submit, approve, reject, roll back, render, preview.

Everything that writes a template or a version goes through here; the API and the admin only
translate their input. Actors are strings (``user:<external id>``, ``staff:<username>``,
``service:<client id>``) because services, which have no user row, author templates too.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
import zoneinfo
from typing import Any, TypeAlias, TypeVar

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import QuerySet
from django.utils import timezone as djtz

from communication.auth.tokens import ServicePrincipal
from communication.exceptions import APIError, ConflictError
from communication.models import Category, User
from templates_app import engine, errors, selectors
from templates_app.models import (
    CHANNEL_FIELDS,
    Template,
    TemplateVariant,
    TemplateVersion,
    VersionStatus,
    normalize_language,
    validate_language,
)
from templates_app.variables import MissingVariablesError, VariableError, examples, validate

logger = logging.getLogger(__name__)

_M = TypeVar("_M", bound=models.Model)

# Who acts: a User, a staff user (the admin), a ServicePrincipal or an actor string. Callers pass
# ``request.user`` as it comes; ``actor_of`` tells them apart by their attributes.
Actor: TypeAlias = object
# A template's variable schema (a list of variable specs) and its JSON data, as stored.
JSONDict: TypeAlias = dict[str, Any]

TEMPLATE_FIELDS = (
    "name",
    "description",
    "category",
    "default_language",
    "variables",
    "active",
    "sms_max_segments",
)
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


def _category(value: Category | str) -> Category:
    if isinstance(value, Category):
        return value
    return _by_key(
        Category.objects.all(), value, "category", "Unknown category.", f"No category {value!r}."
    )


# --------------------------------------------------------------------------------- templates


def template_create(
    *,
    actor: Actor,
    key: str,
    name: str,
    category: Category | str,
    channel: str,
    description: str = "",
    default_language: str = "en",
    variables: list[JSONDict] | None = None,
    active: bool = True,
    sms_max_segments: int | None = None,
) -> Template:
    """Creates a template (no versions yet). Raises ConflictError when ``key`` is taken."""
    template = Template(
        key=key,
        name=name,
        description=description,
        category=_category(category),
        channel=channel,
        default_language=normalize_language(default_language),
        variables=variables or [],
        active=active,
        sms_max_segments=sms_max_segments,
        created_by=actor_of(actor),
    )
    if Template.objects.filter(key=key).exists():
        raise ConflictError(f"A template {key!r} exists already.", code="template_exists")
    template.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            template.save(force_insert=True)
    except IntegrityError as exc:
        raise ConflictError(f"A template {key!r} exists already.", code="template_exists") from exc
    logger.info("template created", extra={"template": key, "actor": template.created_by})
    return template


def template_update(*, template: Template, actor: Actor, **changes: Any) -> Template:
    """Changes a template's description, category, schema, language, or active flag.

    ``key`` and ``channel`` never change: services render by key, and versions are written for
    the channel.
    """
    _refuse_fields(
        set(changes) - set(TEMPLATE_FIELDS),
        "These fields cannot be changed.",
        "This field cannot be changed.",
    )
    for field, value in changes.items():
        if field == "category":
            setattr(template, field, _category(value))
        elif field == "default_language":
            setattr(template, field, normalize_language(value))
        else:
            setattr(template, field, value)
    template.full_clean(validate_unique=False)
    template.save()
    _invalidate(template.key)
    logger.info(
        "template updated",
        extra={"template": template.key, "actor": actor_of(actor), "fields": sorted(changes)},
    )
    return template


def template_save(*, template: Template, actor: Actor) -> Template:
    """Saves a template edited as a whole (the admin form) and drops its cached sources."""
    if not template.created_by:
        template.created_by = actor_of(actor)
    template.save()
    _invalidate(template.key)
    return template


def variant_save(*, variant: TemplateVariant) -> TemplateVariant:
    """Saves an A/B variant (weight, active flag) and drops its template's cached sources."""
    variant.full_clean()
    variant.save()
    _invalidate(variant.template.key)
    return variant


def variant_delete(*, variant: TemplateVariant) -> None:
    """Deletes an A/B variant that has no versions (one with versions is deactivated instead:
    ``ConflictError``) and drops its template's cached sources."""
    if variant.versions.exists():
        raise ConflictError(f"Variant {variant.key} has versions; deactivate it.")
    key = variant.template.key
    variant.delete()
    _invalidate(key)


# ---------------------------------------------------------------------------------- versions


def _check_sources(channel: str, sources: JSONDict, *, require: bool) -> JSONDict:
    """The sources fit the channel, are present where required, and compile."""
    required, optional = CHANNEL_FIELDS[channel]
    allowed = set(required) | set(optional)
    problems: dict[str, list[str]] = {}
    for name, value in sources.items():
        if name not in allowed and value not in ("", None, {}):
            problems[name] = [f"A {channel} template has no {name}."]
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
    return version


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
        if who in (version.created_by, version.submitted_by):
            raise errors.FourEyesError(
                f"{who} wrote or submitted version {version.number}; someone else must approve it."
            )
        previous = _make_live(version.template, version)
        version.approved_by = who
        version.approved_at = djtz.now()
        if note:
            version.review_note = note
        version.save()
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


# --------------------------------------------------------------------------------- rendering


def variant_assign(template_key: str, recipient: str, variants: list[JSONDict]) -> str | None:
    """The variant ``recipient`` sees: the same one every time, in proportion to the weights.

    A hash of template and recipient (not a random draw, not a stored assignment) so that every
    worker agrees without a lookup; changing the weights moves only the recipients near the
    boundaries that moved.
    """
    if not variants:
        return None
    arms = sorted(variants, key=lambda v: v["key"])
    total = sum(v["weight"] for v in arms)
    digest = hashlib.sha256(f"{template_key}\x00{recipient}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") * total >> 64
    for arm in arms:
        point -= arm["weight"]
        if point < 0:
            return str(arm["key"])
    return str(arms[-1]["key"])


def _choose(bundle: JSONDict, chain: list[str], variant: str | None) -> tuple[JSONDict, str | None]:
    for line in ([variant] if variant else []) + [""]:
        versions = bundle["versions"].get(line or "", {})
        for language in chain:
            if language in versions:
                return versions[language], line or None
    raise errors.NoLiveVersionError(
        f"Template {bundle['template']['key']!r} has no live version in "
        f"{', '.join(chain) or 'any language'}."
    )


def _context(variables: list[JSONDict], data: JSONDict) -> tuple[JSONDict, list[str]]:
    try:
        return validate(variables, data)
    except MissingVariablesError as exc:
        first = exc.names[0]
        names = ", ".join(repr(n) for n in exc.names)
        raise errors.MissingVariableError(
            first,
            f"Missing variable{'s' if len(exc.names) > 1 else ''} {names}.",
            variables=list(exc.names),
        ) from exc
    except VariableError as exc:
        raise errors.InvalidVariableError(exc.message, fields={exc.name: [exc.message]}) from exc


def render_context(variables: list[JSONDict], data: JSONDict) -> tuple[JSONDict, list[str]]:
    """The render context for ``data`` checked against a variable schema, and warnings.

    Raises MissingVariableError naming every missing variable, InvalidVariableError for a
    value of the wrong type (both 400). For callers that render without a saved template.
    """
    return _context(variables, data)


def _recipient_defaults(recipient: str | None) -> tuple[str, str]:
    if not recipient:
        return "", ""
    user = User.objects.filter(external_id=recipient).only("locale", "timezone").first()
    if user is None:
        return "", ""
    return user.locale, user.timezone


def _check_timezone(name: str) -> str:
    if not name:
        return ""
    try:
        engine.tzinfo_for(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise APIError(
            "Unknown time zone.",
            code="validation_error",
            fields={"timezone": [f"{name!r} is not a time zone."]},
        ) from exc
    return name


def _render(
    *,
    meta: JSONDict,
    version: JSONDict,
    variant: str | None,
    data: JSONDict,
    locale: str | None,
    timezone: str,
    enforce: bool,
) -> dict[str, Any]:
    context, warnings = _context(meta["variables"], data)
    rendered = engine.render_fields(
        channel=meta["channel"],
        sources=version["sources"],
        context=context,
        locale=locale or version["language"],
        timezone=timezone,
        cache_key=version["id"],
        sms_max_segments=meta.get("sms_max_segments"),
        enforce_sms_limit=enforce,
    )
    out = {
        "template": meta["key"],
        "channel": meta["channel"],
        "version": version["id"],
        "version_number": version["number"],
        "language": version["language"],
        "variant": variant,
    }
    out.update(rendered.as_dict())
    out["warnings"] = warnings + out["warnings"]
    return out


def template_render(
    *,
    key: str,
    data: JSONDict,
    locale: str | None = None,
    timezone: str | None = None,
    recipient: str | None = None,
) -> dict[str, Any]:
    """Renders the live version of ``key`` for a send.

    Language: ``locale`` (else the recipient's), falling back ``fr-CA → fr → default``. With a
    recipient and active A/B variants, the recipient's variant is used (``variant`` in the
    result says which). Dates and times are shown in ``timezone`` (else the recipient's, else
    UTC). Raises the TemplateError subclasses (400), NoLiveVersionError (404), ConflictError
    for an inactive template; an SMS over its segment limit is a RenderLimitError here.
    """
    bundle = selectors.bundle_get(key)
    meta = bundle["template"]
    if not meta["active"]:
        raise ConflictError(f"Template {key!r} is inactive.", code="template_inactive")
    if recipient and not (locale and timezone):
        user_locale, user_tz = _recipient_defaults(recipient)
        locale = locale or user_locale
        timezone = timezone or user_tz
    locale = normalize_language(locale) if locale else None
    chain = engine.language_chain(locale, meta["default_language"])
    arm = variant_assign(key, recipient, bundle["variants"]) if recipient else None
    version, variant = _choose(bundle, chain, arm)
    return _render(
        meta=meta,
        version=version,
        variant=variant,
        data=data,
        locale=locale,
        timezone=_check_timezone(timezone or ""),
        enforce=True,
    )


def template_preview(
    *,
    key: str,
    data: JSONDict | None = None,
    locale: str | None = None,
    timezone: str | None = None,
    version_id: uuid.UUID | str | None = None,
) -> dict[str, Any]:
    """Renders ``key`` for a person to look at: the live version, or ``version_id`` whatever its
    status. Missing data comes from the schema's examples; limits are warnings."""
    if version_id is not None:
        version_obj = selectors.version_get(version_id)
        template = version_obj.template
        if template.key != key:
            raise errors.InvalidTransitionError(
                f"That version belongs to {template.key!r}, not {key!r}.", code="version_mismatch"
            )
        meta = {
            "key": template.key,
            "channel": template.channel,
            "variables": template.variables,
            "sms_max_segments": template.sms_max_segments,
        }
        version = {
            "id": f"{version_obj.pk}:{version_obj.updated_at.timestamp()}",
            "number": version_obj.number,
            "language": version_obj.language,
            "sources": version_obj.source_fields(template.channel),
        }
        variant = version_obj.variant.key if version_obj.variant is not None else None
    else:
        bundle = selectors.bundle_get(key)
        meta = bundle["template"]
        locale_n = normalize_language(locale) if locale else None
        version, variant = _choose(
            bundle, engine.language_chain(locale_n, meta["default_language"]), None
        )
    sample = {**examples(meta["variables"]), **(data or {})}
    out = _render(
        meta=meta,
        version=version,
        variant=variant,
        data=sample,
        locale=normalize_language(locale) if locale else None,
        timezone=_check_timezone(timezone or ""),
        enforce=False,
    )
    if version_id is not None:
        out["version"] = str(version_obj.pk)
    return out


def draft_preview(
    *,
    channel: str,
    sources: JSONDict,
    data: JSONDict | None = None,
    locale: str | None = None,
    timezone: str | None = None,
) -> dict[str, Any]:
    """Renders unsaved sources (the editor's preview); nothing is stored."""
    cleaned = _check_sources(channel, sources, require=False)
    rendered = engine.render_fields(
        channel=channel,
        sources=cleaned,
        context=dict(data or {}),
        locale=normalize_language(locale) if locale else "en",
        timezone=_check_timezone(timezone or ""),
    )
    out: dict[str, Any] = {"channel": channel}
    out.update(rendered.as_dict())
    return out


def cache_stats() -> dict[str, Any]:
    """Hit rates of this process's caches: live sources (Redis) and compiled templates."""
    return {"sources": selectors.source_cache_counter.stats(), **engine.stats()}
