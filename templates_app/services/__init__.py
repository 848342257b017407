"""The verbs of templates: create, draft, submit, approve, reject, roll back, render, preview.

Everything that writes a template or a version goes through here; the API and the admin only
translate their input. One module per family of verbs (Zulip's ``zerver/actions`` being the
model):

- ``common``: who acts (``actor_of``) and dropping a template's cached sources after commit;
- ``templates``: template create, update and save (the admin form); A/B variants;
- ``versions``: source checks; version create, update, submit, approve, reject, archive;
  rollback;
- ``render``: template render and previews, render contexts, variant assignment, cache stats.

Callers use the names re-exported here (``from templates_app import services;
services.template_render(...)``).
"""

from templates_app.services.common import Actor, JSONDict, actor_of
from templates_app.services.render import (
    cache_stats,
    draft_preview,
    render_context,
    template_preview,
    template_render,
    variant_assign,
)
from templates_app.services.templates import (
    TEMPLATE_FIELDS,
    template_create,
    template_save,
    template_update,
    variant_delete,
    variant_save,
)
from templates_app.services.versions import (
    SOURCE_FIELDS,
    template_rollback,
    version_approval_refusal,
    version_approve,
    version_archive,
    version_check_sources,
    version_create,
    version_reject,
    version_submit,
    version_update,
)

__all__ = [
    "SOURCE_FIELDS",
    "TEMPLATE_FIELDS",
    "Actor",
    "JSONDict",
    "actor_of",
    "cache_stats",
    "draft_preview",
    "render_context",
    "template_create",
    "template_preview",
    "template_render",
    "template_rollback",
    "template_save",
    "template_update",
    "variant_assign",
    "variant_delete",
    "variant_save",
    "version_approval_refusal",
    "version_approve",
    "version_archive",
    "version_check_sources",
    "version_create",
    "version_reject",
    "version_submit",
    "version_update",
]
