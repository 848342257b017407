"""What a delivery says: a template of the channel, or the request's inline content.

A request names a template *family*: ``"system-alert"`` is the template ``system-alert`` when its
channel is the one being sent, else ``system-alert-<channel>`` (``system-alert-email``,
``system-alert-sms``, ``system-alert-in_app`` …), so one request can speak on every channel.
"""

from __future__ import annotations

import logging
import re
import uuid

import lxml.html
from lxml import etree

from analytics import tracking
from templates_app import engine
from templates_app import selectors as template_selectors
from templates_app import services as template_services
from templates_app.models import Template

logger = logging.getLogger(__name__)


def candidates(family: str, channel: str) -> list[str]:
    return [family, f"{family}-{channel}", f"{family}-{channel.replace('_', '-')}"]


def template_keys(family: str, channels: list[str]) -> dict[str, str]:
    """``{channel: template key}`` for the channels that have a template in ``family``."""
    wanted = {key: ch for ch in channels for key in candidates(family, ch)}
    found = dict(
        Template.objects.filter(key__in=list(wanted), active=True).values_list("key", "channel")
    )
    out: dict[str, str] = {}
    for channel in channels:
        for key in candidates(family, channel):
            if found.get(key) == channel:
                out[channel] = key
                break
    return out


def recipient_context(data: dict, *, user=None, email: str = "", phone: str = "") -> dict:
    """The data a template sees for one recipient: the request's ``data``, plus ``recipient``
    (name, email, phone, user_id, locale, timezone) and ``name`` when the caller gave none."""
    recipient = {
        "user_id": getattr(user, "external_id", None),
        "name": getattr(user, "name", "") or "",
        "email": getattr(user, "email", "") or email,
        "phone": getattr(user, "phone", "") or phone,
        "locale": getattr(user, "locale", "") or "",
        "timezone": getattr(user, "timezone", "") or "",
    }
    context = {"recipient": recipient, **data}
    if "name" not in context and recipient["name"]:
        context["name"] = recipient["name"]
    return context


def schemas(template_keys: dict[str, str]) -> list[list]:
    """The variable schemas of the templates a request uses (read once per request)."""
    return [
        template_selectors.bundle_get(key)["template"]["variables"]
        for key in dict.fromkeys(template_keys.values())
    ]


def validate_data(variable_schemas: list[list], context: dict) -> None:
    """Raises the 400 (missing_variable / invalid_variable) a render would raise, before any row is
    written: a request that cannot render is refused whole."""
    for variables in variable_schemas:
        template_services.render_context(variables, context)


def render(
    *,
    channel: str,
    template_key: str,
    content: dict,
    data: dict,
    locale: str,
    timezone: str,
    recipient: str | None,
) -> dict:
    """The rendered fields for one delivery (subject/html/text, text, title/body/data …).

    Raises the templates_app TemplateError subclasses (a 400 at the API; a permanent failure in
    the worker).
    """
    if template_key:
        return template_services.template_render(
            key=template_key,
            data=data,
            locale=locale or None,
            timezone=timezone or None,
            recipient=recipient,
        )
    sources = _inline_sources(channel, content)
    rendered = engine.render_fields(
        channel=channel,
        sources=sources,
        context=dict(data),
        locale=locale or "en",
        timezone=timezone,
        enforce_sms_limit=channel == "sms",
    )
    out = rendered.as_dict()
    out.update({"template": None, "version": None, "variant": None})
    return out


def _inline_sources(channel: str, content: dict) -> dict:
    subject = content.get("subject") or content.get("title") or ""
    body = content.get("body") or content.get("text") or ""
    if channel == "email":
        return {
            "subject": subject,
            "html": content.get("html", ""),
            "text": content.get("text") or body,
        }
    if channel == "sms":
        return {"text": content.get("text") or body}
    sources = {
        "title": content.get("title") or subject,
        "body": body,
        "data": content.get("data") or {},
    }
    for name in ("image", "deep_link", "action_url"):
        if content.get(name):
            sources[name] = content[name]
    return sources


# Whether an email's HTML is a whole document (rewritten as one) or a fragment (kept one).
_DOCUMENT = re.compile(r"<(!doctype|html[\s>])", re.IGNORECASE)
_DOCTYPE = re.compile(r"\s*<!doctype", re.IGNORECASE)


def track_links(html: str, *, delivery_id: uuid.UUID | str) -> str:
    """``html`` with its http(s) links leading through the click redirect and the open pixel
    appended, for a category that allows tracking. Left alone: the unsubscribe link (a click
    there must not count, and mail clients must see our own URL), ``mailto:``, ``tel:`` and
    other schemes, and links whose URL cannot be signed. HTML that lxml cannot read is sent
    untracked rather than not at all."""
    if not html.strip():
        return html
    links = tracking.Links(delivery_id)
    keep = (f"{links.base}/u/", f"{links.base}/t/")
    document = _DOCUMENT.search(html, 0, 2000) is not None
    try:
        if document:
            root = lxml.html.document_fromstring(html)
            body = root.find("body")
            container = body if body is not None else etree.SubElement(root, "body")
        else:
            root = container = lxml.html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError) as exc:
        # The error's kind only: a parser's message can quote the rendered HTML.
        logger.warning(
            "email HTML not tracked",
            extra={"delivery": str(delivery_id), "error": type(exc).__name__},
        )
        return html
    for link in root.iter("a"):
        href = (link.get("href") or "").strip()
        if not href[:8].lower().startswith(("http://", "https://")) or href.startswith(keep):
            continue
        try:
            link.set("href", links.click_url(href))
        except ValueError:
            continue  # not a URL that can be signed: left as it is
    etree.SubElement(container, "img", src=links.open_url(), width="1", height="1", alt="")
    if document:
        # lxml reports a default doctype for a document that had none: keep only a real one.
        # (lxml-stubs lack DocInfo.doctype.)
        info = root.getroottree().docinfo
        doctype = info.doctype if _DOCTYPE.match(html) else None  # type: ignore[attr-defined]
        return lxml.html.tostring(root, encoding="unicode", doctype=doctype)
    return (container.text or "") + "".join(
        lxml.html.tostring(child, encoding="unicode") for child in container
    )
