"""What a render produces per channel: the result, email finishing (CSS inlined, a text
alternative), SMS encoding and segments, and the check of rendered URLs."""

from __future__ import annotations

from dataclasses import dataclass, field

import css_inline

from templates_app import errors
from templates_app.engine.text import html_to_text
from templates_app.sms import non_gsm7, normalize, sms_info

_inliner = css_inline.CSSInliner(
    load_remote_stylesheets=False,  # a template must not make the worker fetch URLs
    keep_at_rules=True,  # @media queries stay in a <style> for the clients that read them
)


@dataclass
class Rendered:
    """What a render produced: the fields of the channel, SMS figures, and warnings."""

    channel: str
    fields: dict = field(default_factory=dict)
    sms: dict | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = dict(self.fields)
        if self.sms is not None:
            out["sms"] = self.sms
        out["warnings"] = list(self.warnings)
        return out


URL_FIELDS = frozenset({"image", "deep_link", "action_url"})
# A link a client opens on a tap: data from a caller must not turn it into script.
UNSAFE_SCHEMES = frozenset({"javascript", "vbscript", "data", "file"})


def _checked_url(name: str, value: str) -> str:
    scheme = value.split(":", 1)[0].strip().lower() if ":" in value else ""
    # Browsers ignore control characters and whitespace inside a scheme ("java\tscript:").
    scheme = "".join(ch for ch in scheme if ch.isprintable() and not ch.isspace())
    if scheme in UNSAFE_SCHEMES:
        raise errors.TemplateSecurityError(
            f"The rendered URL uses the {scheme}: scheme, which is not allowed.", field=name
        )
    return value


def _finish_email(result: Rendered) -> None:
    html = result.fields.get("html", "")
    if not result.fields.get("text"):
        # From the HTML before inlining: the same text, without the style attributes.
        result.fields["text"] = html_to_text(html) if html else ""
    if html:
        result.fields["html"] = _inliner.inline(html)
    result.fields.setdefault("subject", "")


def _finish_sms(result: Rendered, maximum: int, *, enforce: bool) -> None:
    text = normalize(result.fields.get("text", ""))
    result.fields["text"] = text
    result.sms = sms_info(text)
    if result.sms["encoding"] != "GSM-7":
        chars = "".join(non_gsm7(text)[:10])
        result.warnings.append(
            f"The text contains characters outside GSM-7 ({chars}); it is sent as "
            f"UCS-2, {result.sms['segments']} segment(s)."
        )
    if result.sms["segments"] > maximum:
        message = f"The SMS takes {result.sms['segments']} segments; at most {maximum}."
        if enforce:
            raise errors.RenderLimitError(message, field="text")
        result.warnings.append(message)
