"""Rendering: a live version for a send, previews for people, A/B variant assignment, and the
caches' hit rates."""

from __future__ import annotations

import hashlib
import uuid
import zoneinfo
from typing import Any

from communication.exceptions import APIError, ConflictError
from communication.models import User
from templates_app import engine, errors, selectors
from templates_app.models import normalize_language
from templates_app.services.common import JSONDict
from templates_app.services.versions import _check_sources
from templates_app.variables import MissingVariablesError, VariableError, examples, validate


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
