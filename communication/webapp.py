"""The reference web client at ``/app/``: one static page whose modules (``static/app/``) talk to
the service only through ``commclient.js``, as an integrating front end would."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "app/index.html")
