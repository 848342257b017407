"""Server-side template injection: a corpus of escapes from Jinja2's sandbox, each refused with a
400 that leaks nothing of the server, through a template preview and through a send's in-app body.

The corpus crosses the objects a template can reach (literals, the engine's globals, the data
given to it) with the ways past the sandbox that have worked before (dunder attributes by dot,
subscript and ``|attr``, string formatting, imports and includes).
"""

from __future__ import annotations

import itertools

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from communication.models import User

pytestmark = pytest.mark.django_db

ROOTS = ["''", "()", "[]", "{}", "lipsum", "cycler", "joiner", "namespace", "x", "self"]
CHAINS = [
    ".__class__",
    "['__class__']",
    "|attr('__class__')",
    ".__class__.__mro__[1].__subclasses__()",
    ".__init__.__globals__",
    "|attr('__init__')|attr('__globals__')",
    ".__dict__",
    ".__reduce_ex__(2)",
    "['__globals__']['os'].popen('id').read()",
    "|attr('\\x5f\\x5fclass\\x5f\\x5f')",
]
FORMATTING = [
    "{{{{ '{{0.__class__}}'.format({root}) }}}}",
    "{{{{ '{{a.__class__.__mro__}}'.format_map({{'a': {root}}}) }}}}",
    "{{{{ '%s'|format({root}.__class__) }}}}",
    "{{{{ '{{0.__init__.__globals__}}'.format({root}) }}}}",
]
STATEMENTS = [
    "{% import 'os' as os %}{{ os }}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{% from 'os' import system %}{{ system('id') }}",
    "{% set c = ''.__class__ %}{{ c }}",
    "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
    "{% with g = lipsum.__globals__ %}{{ g }}{% endwith %}",
    "{{ config.items() }}",
    "{{ settings.SECRET_KEY }}",
    "{{ request.environ }}",
]
CORPUS = [
    *(f"{{{{ {root}{chain} }}}}" for root, chain in itertools.product(ROOTS, CHAINS)),
    *(form.format(root=root) for form, root in itertools.product(FORMATTING, ROOTS[:5])),
    *STATEMENTS,
]
# What a rendered object, a file or the environment would show; none may reach an answer.
LEAKS = ["<class", "<function", "<module", "<built-in", "root:", "uid=", "Traceback", "environ("]


def test_the_corpus_is_large_enough():
    assert len(set(CORPUS)) >= 100


def assert_refused_without_leak(response, payload: str) -> None:
    assert response.status_code == 400, (payload, response.content)
    body = response.json()
    assert set(body) <= {"code", "detail", "fields"}, body
    text = response.content.decode()
    assert settings.SECRET_KEY not in text
    leaked = [marker for marker in LEAKS if marker in text]
    assert not leaked, (payload, text)


@pytest.fixture
def editor(make_service_token):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_service_token('cms', ['templates:manage'])}"
    )
    return client


@pytest.fixture
def sender(make_service_token):
    User.objects.create(username="ssti", external_id="ssti", email="ssti@example.com")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('billing')}")
    return client


def test_every_escape_is_refused_in_a_preview(editor):
    def preview(body: str):
        return editor.post(
            "/api/v1/templates/preview",
            {"channel": "in_app", "title": "t", "body": body, "data": {"x": "y"}},
            format="json",
        )

    # The same request with a harmless body renders: the refusals below come from the payloads.
    assert preview("{{ x|upper }}").json()["body"] == "Y"
    codes = set()
    for payload in CORPUS:
        response = preview(payload)
        assert_refused_without_leak(response, payload)
        codes.add(response.json()["code"])
    assert codes == {"template_security"}, codes


def test_every_escape_is_refused_in_a_sends_in_app_body(sender):
    def send(body: str):
        return sender.post(
            "/api/v1/notifications",
            {
                "recipients": [{"user_id": "ssti"}],
                "category": "alerts",
                "channels": ["in_app"],
                "content": {"title": "t", "body": body},
                "data": {"x": "y"},
            },
            format="json",
        )

    assert send("{{ x|upper }}").status_code == 202
    codes = set()
    for payload in CORPUS:
        response = send(payload)
        assert_refused_without_leak(response, payload)
        codes.add(response.json()["code"])
    assert codes == {"template_security"}, codes
