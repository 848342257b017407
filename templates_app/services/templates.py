"""Templates and their A/B variants: create, update, save (the admin form), variants."""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction

from communication.audit import audit_record, field_changes
from communication.exceptions import ConflictError
from communication.models import Category
from templates_app.models import Template, TemplateVariant, normalize_language
from templates_app.services.common import (
    Actor,
    JSONDict,
    _by_key,
    _invalidate,
    _refuse_fields,
    actor_of,
)

logger = logging.getLogger(__name__)

TEMPLATE_FIELDS = (
    "name",
    "description",
    "category",
    "default_language",
    "variables",
    "active",
    "sms_max_segments",
)


def _category(value: Category | str) -> Category:
    if isinstance(value, Category):
        return value
    return _by_key(
        Category.objects.all(), value, "category", "Unknown category.", f"No category {value!r}."
    )


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
            audit_record(
                "template.create",
                "templates_app.template",
                template.pk,
                changes={"key": key, "channel": channel, "category": template.category.key},
                actor=template.created_by,
            )
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
    before = {field: _value(template, field) for field in changes}
    for field, value in changes.items():
        if field == "category":
            setattr(template, field, _category(value))
        elif field == "default_language":
            setattr(template, field, normalize_language(value))
        else:
            setattr(template, field, value)
    template.full_clean(validate_unique=False)
    with transaction.atomic():
        template.save()
        audit_record(
            "template.update",
            "templates_app.template",
            template.pk,
            changes=field_changes(before, {field: _value(template, field) for field in changes}),
            actor=actor_of(actor),
        )
    _invalidate(template.key)
    logger.info(
        "template updated",
        extra={"template": template.key, "actor": actor_of(actor), "fields": sorted(changes)},
    )
    return template


def _value(template: Template, field: str) -> Any:
    return template.category.key if field == "category" else getattr(template, field)


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
