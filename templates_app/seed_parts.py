"""The pieces every seeded template family is built from (``templates_app.seed`` and
``templates_app.seed_digest``): a button, and the variables' declarations."""

from __future__ import annotations

from typing import Any


def button(label: str, url_var: str = "action_url") -> str:
    return (
        f"{{% if {url_var} is defined and {url_var} %}}"
        f'<p><a class="button" href="{{{{ {url_var} }}}}">{label}</a></p>{{% endif %}}'
    )


# -------------------------------------------------------------------------------- variables


def var(name, type_="string", example=None, required=True, description=""):
    spec = {"name": name, "type": type_, "required": required}
    if example is not None:
        spec["example"] = example
    if description:
        spec["description"] = description
    return spec


NAME = var("name", example="Ada", description="The recipient's first name")
ACTION: dict[str, Any] = var("action_url", "url", "https://example.com/account", required=False)
