"""The unsubscribe page (outside the API: a person follows it from an email)."""

from __future__ import annotations

from django.http import HttpResponse
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from notifications import services, unsubscribe

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Unsubscribe</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.6rem 1.2rem}}</style></head><body>{content}</body></html>"""


@csrf_exempt  # RFC 8058 one-click POSTs come from mail clients, with no session or CSRF token
@require_http_methods(["GET", "POST"])
def unsubscribe_view(request, token: str):
    payload = unsubscribe.read_token(token)
    if payload is None:
        return HttpResponse(PAGE.format(content="<h1>This link is not valid</h1>"), status=400)
    if request.method == "GET":
        content = (
            "<h1>Unsubscribe?</h1><p>You will stop receiving "
            f"<strong>{escape(payload['c'])}</strong> messages by {escape(payload['ch'])}.</p>"
            '<form method="post"><button type="submit">Unsubscribe</button></form>'
        )
        return HttpResponse(PAGE.format(content=content))
    one_click = request.POST.get("List-Unsubscribe") == "One-Click"
    what = services.unsubscribe_apply(payload, source="one-click" if one_click else "page")
    return HttpResponse(
        PAGE.format(content=f"<h1>Done</h1><p>You will no longer receive {escape(what)}.</p>")
    )
