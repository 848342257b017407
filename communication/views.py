"""Operational endpoints (plain Django views, outside the versioned API)."""

from __future__ import annotations

from django.http import Http404, JsonResponse
from django.views.decorators.http import require_GET

from communication import demo, health
from communication.auth import keys


@require_GET
def live(request):
    return JsonResponse({"status": "ok"})


@require_GET
def ready(request):
    ok, body = health.readiness()
    return JsonResponse(body, status=200 if ok else 503)


@require_GET
def jwks(request):
    """The development key set; absent once an identity service is configured."""
    if not keys.dev_mode():
        raise Http404
    response = JsonResponse(keys.dev_jwks())
    response["Cache-Control"] = "public, max-age=300"
    return response


@require_GET
def demo_users(request):
    """The demo users and their tokens, for ``/app/``'s sign-in; development only."""
    if not demo.available():
        raise Http404
    response = JsonResponse(demo.users_tokens(), safe=False)
    response["Cache-Control"] = "no-store"
    return response
