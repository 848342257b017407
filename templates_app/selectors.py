"""Reads shared by the API, the admin and the render path."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Window

from communication.exceptions import NotFoundError
from communication.models import Category
from templates_app.models import Template, TemplateVariant, TemplateVersion, VersionStatus

# Bump when the shape of a cached bundle changes: old entries are then simply never read.
BUNDLE_VERSION = 1
BUNDLE_TTL = 3600


def live_versions_prefetch() -> Prefetch[str, QuerySet[TemplateVersion], str]:
    """Live versions of each template as ``.live_versions``."""
    return Prefetch(
        "versions",
        queryset=TemplateVersion.objects.filter(is_live=True)
        .select_related("variant")
        .only("id", "template_id", "variant__key", "language", "number", "live_since")
        .order_by("language"),
        to_attr="live_versions",
    )


def template_list(
    *,
    category: str | None = None,
    channel: str | None = None,
    language: str | None = None,
    active: bool | None = None,
    search: str | None = None,
) -> QuerySet[Template]:
    """Templates with their category and live versions (``.live_versions``) in two queries."""
    qs = Template.objects.select_related("category").prefetch_related(live_versions_prefetch())
    if category:
        qs = qs.filter(category__key=category)
    if channel:
        qs = qs.filter(channel=channel)
    if language:
        qs = qs.filter(
            Exists(
                TemplateVersion.objects.filter(
                    template=OuterRef("pk"), is_live=True, language=language
                )
            )
        )
    if active is not None:
        qs = qs.filter(active=active)
    if search:
        qs = qs.filter(Q(key__icontains=search) | Q(name__icontains=search))
    return qs.order_by("key")


def template_get(key: str) -> Template:
    template = (
        Template.objects.select_related("category")
        .prefetch_related(
            live_versions_prefetch(),
            Prefetch("variants", queryset=TemplateVariant.objects.order_by("key")),
        )
        .filter(key=key)
        .first()
    )
    if template is None:
        raise NotFoundError(f"No template {key!r}.", code="template_not_found")
    return template


def template_require(key: str) -> None:
    """NotFoundError unless a template ``key`` exists (one cheap query)."""
    if not Template.objects.filter(key=key).exists():
        raise NotFoundError(f"No template {key!r}.", code="template_not_found")


def category_list() -> QuerySet[Category]:
    """Every category, in the order the user's preferences list them: the one vocabulary."""
    return Category.objects.order_by("position", "key")


def category_list_with_templates() -> QuerySet[Category]:
    return Category.objects.filter(
        Exists(Template.objects.filter(category=OuterRef("pk")))
    ).order_by("position", "key")


def version_list(
    *,
    template: str | None = None,
    language: str | None = None,
    status: str | None = None,
) -> QuerySet[TemplateVersion]:
    qs = TemplateVersion.objects.select_related("template", "variant")
    if template:
        qs = qs.filter(template__key=template)
    if language:
        qs = qs.filter(language=language)
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("template__key", "-number")


def version_get(version_id: uuid.UUID | str, *, for_update: bool = False) -> TemplateVersion:
    qs = TemplateVersion.objects.select_related("template", "variant", "template__category")
    if for_update:
        qs = qs.select_for_update(of=("self",))
    try:
        return qs.get(pk=version_id)
    except (TemplateVersion.DoesNotExist, ValueError, ValidationError) as exc:
        # A malformed id (ValidationError from the UUID field) names no version either.
        raise NotFoundError(f"No template version {version_id}.", code="version_not_found") from exc


def version_others(version: TemplateVersion, *, limit: int = 50) -> QuerySet[TemplateVersion]:
    """The other versions of ``version``'s template, newest first (the admin's version list)."""
    return (
        TemplateVersion.objects.filter(template_id=version.template_id)
        .exclude(pk=version.pk)
        .select_related("variant")
        .only(
            "id",
            "template_id",
            "variant__key",
            "number",
            "language",
            "status",
            "is_live",
        )
        .order_by("-number")[:limit]
    )


def version_diff_base(
    version: TemplateVersion, against_id: str | None = None
) -> TemplateVersion | None:
    """What ``version`` is compared with: ``against_id`` when that is another version of the same
    template; else what is live for its language and line; else the latest one before it in its
    language and line; else None."""
    others = TemplateVersion.objects.filter(template_id=version.template_id).exclude(pk=version.pk)
    if against_id:
        try:
            chosen = others.filter(pk=uuid.UUID(str(against_id))).first()
        except ValueError:
            chosen = None
        if chosen is not None:
            return chosen
    same_line = others.filter(language=version.language, variant_id=version.variant_id)
    return (
        same_line.filter(is_live=True).first()
        or same_line.filter(number__lt=version.number).order_by("-number").first()
    )


def template_live_versions(template: Template) -> QuerySet[TemplateVersion]:
    """What is live for ``template``, per language and variant (the admin's overview)."""
    return (
        TemplateVersion.objects.filter(template=template, is_live=True)
        .select_related("variant")
        .order_by("language", "variant__key")
    )


# ------------------------------------------------------------------------- the render cache


class _Counter:
    """Hits and misses of the live-source cache in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / total if total else 0.0,
        }

    def reset(self) -> None:
        with self._lock:
            self.hits = self.misses = 0


source_cache_counter = _Counter()


def bundle_cache_key(template_key: str) -> str:
    return f"templates:live:v{BUNDLE_VERSION}:{template_key}"


def generation_cache_key(template_key: str) -> str:
    return f"templates:gen:{template_key}"


def bundle_invalidate(template_key: str) -> None:
    """Bumps the template's generation and drops its cached bundle.

    The generation closes a race: a render that read the database just before an approval
    committed would otherwise cache the old sources after this delete, for the whole TTL. Its
    bundle carries the generation it started from, which no longer matches.
    """
    key = generation_cache_key(template_key)
    cache.add(key, 0, None)
    try:
        cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, None)
    cache.delete(bundle_cache_key(template_key))


def _version_sources(version: TemplateVersion, channel: str) -> dict[str, Any]:
    return {
        "id": str(version.id),
        "number": version.number,
        "language": version.language,
        "sources": version.source_fields(channel),
    }


def bundle_build(template_key: str) -> dict[str, Any] | None:
    """What rendering ``template_key`` needs, from the database (two queries)."""
    template = Template.objects.filter(key=template_key).first()
    if template is None:
        return None
    versions: dict[str, dict[str, dict[str, Any]]] = {}
    for version in TemplateVersion.objects.filter(template=template, is_live=True).select_related(
        "variant"
    ):
        line = version.variant.key if version.variant is not None else ""
        versions.setdefault(line, {})[version.language] = _version_sources(
            version, template.channel
        )
    variants = [
        {"key": v.key, "weight": v.weight}
        for v in template.variants.filter(active=True).order_by("key")
        if v.key in versions
    ]
    return {
        "template": {
            "id": str(template.id),
            "key": template.key,
            "channel": template.channel,
            "default_language": template.default_language,
            "variables": template.variables,
            "active": template.active,
            "sms_max_segments": template.sms_max_segments,
        },
        "variants": variants,
        "versions": versions,
    }


def bundle_get(template_key: str) -> dict[str, Any]:
    """The live sources of ``template_key``: from the cache (Redis), else built and cached.

    One round trip on a hit (the bundle and the template's generation in one MGET). Approve,
    rollback and template changes bump the generation after their transaction commits.
    Raises NotFoundError for an unknown key.
    """
    key, gen_key = bundle_cache_key(template_key), generation_cache_key(template_key)
    found = cache.get_many([key, gen_key])
    generation = found.get(gen_key, 0)
    bundle = found.get(key)
    if bundle is not None and bundle.get("generation") != generation:
        bundle = None
    source_cache_counter.count(bundle is not None)
    if bundle is None:
        bundle = bundle_build(template_key)
        if bundle is None:
            raise NotFoundError(f"No template {template_key!r}.", code="template_not_found")
        bundle["generation"] = generation
        cache.set(key, bundle, BUNDLE_TTL)
    return bundle


def live_versions_by_language(template: Template) -> dict[str, list[TemplateVersion]]:
    """For the admin: live versions per language (a variant's beside the main line)."""
    out: dict[str, list[TemplateVersion]] = {}
    for version in getattr(template, "live_versions", None) or template.versions.filter(
        is_live=True
    ).select_related("variant"):
        out.setdefault(version.language, []).append(version)
    return dict(sorted(out.items()))


__all__ = [
    "VersionStatus",
    "bundle_get",
    "category_list_with_templates",
    "source_cache_counter",
    "template_get",
    "template_list",
    "version_get",
    "version_list",
]


# -------------------------------------------------------------------- the console's dashboard


def versions_awaiting_approval(*, limit: int = 8) -> tuple[list[TemplateVersion], int]:
    """Versions submitted for approval, the longest waiting first, with their template; and how
    many are waiting in all. One query (the count rides along as a window)."""
    found = list(
        TemplateVersion.objects.filter(status=VersionStatus.PENDING)
        .select_related("template", "variant")
        .annotate(waiting=Window(Count("id")))
        .order_by("submitted_at", "id")[:limit]
    )
    waiting: int = found[0].waiting if found else 0
    return [*found], waiting
