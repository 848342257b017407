"""Renders are bounded by construction: hostile templates fail fast with ``400 render_limit``,
renders run on an executor of their own, and the API keeps answering while it is full."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from rest_framework.test import APIClient

from communication.processes import server_argv
from conftest import _stop, free_port, process_env, wait_for
from templates_app import errors
from templates_app.executor import RenderExecutor

pytestmark = pytest.mark.django_db

BIG = '("x" * 500000)'
HOSTILE = {
    "wordwrap": f"{{{{ {BIG}|wordwrap(1)|length }}}}",
    "wordwrap of words": '{{ ("x " * 250000)|wordwrap(79)|length }}',
    "wordwrap of one long word": f"{{{{ {BIG}|wordwrap(79)|length }}}}",
    "replace": f'{{{{ {BIG}|replace("x", "yy")|length }}}}',
    "replace of nothing": f'{{{{ {BIG}|replace("", "y")|length }}}}',
    "join": f'{{{{ {BIG}|list|join(",")|length }}}}',
    "split then sort": '{{ ("x " * 250000).split()|sort|length }}',
    "urlize": '{{ ("x " * 250000)|urlize|length }}',
    "title": '{{ ("x " * 250000)|title|length }}',
    "groupby": '{{ ("x " * 250000).split()|groupby("x")|list|length }}',
    "escape amplifies": '{{ ("<" * 500000)|escape|length }}',
    "urlencode amplifies": '{{ ("é" * 500000)|urlencode|length }}',
    "list to string": "{{ (range(10000)|list|list * 50)|string|length }}",
    "string times": '{{ "x" * 10 ** 8 }}',
    "power": "{{ 9 ** 999999 }}",
    "list times": "{{ ([1] * 10 ** 7)|length }}",
    "range": "{{ range(10 ** 9)|length }}",
    "nested loops": (
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    ),
    "nested references": (
        f"{{% set a = [{BIG}] %}}{{% set b = [a, a, a, a, a, a, a, a, a, a] %}}"
        "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{{ c|string|length }}"
    ),
    "block set in a loop": (
        f"{{% set s = {BIG} %}}{{% set out %}}{{% for i in range(1000) %}}{{{{ s }}}}"
        "{% endfor %}{% endset %}{{ out|length }}"
    ),
    "concatenation": f"{{{{ ({BIG} ~ {BIG})|length }}}}",
    "namespace": f"{{% set ns = namespace(v=[]) %}}{{% set ns.v = [{BIG}, {BIG}] %}}",
    "macro output": (
        f"{{% macro m() %}}{{% for i in range(100) %}}{{{{ {BIG} }}}}{{% endfor %}}"
        "{% endmacro %}{{ m()|length }}"
    ),
}


@pytest.fixture
def renderer(make_service_token):
    client = APIClient()
    token = make_service_token("cms", ["templates:manage", "templates:render"])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def preview(client, body: str, **data):
    return client.post(
        "/api/v1/templates/preview",
        {"channel": "in_app", "title": "t", "body": body, "data": data},
        format="json",
    )


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_template_is_a_quick_render_limit(renderer, settings, name):
    settings.TEMPLATES_TIME_LIMIT = 1.0
    started = time.monotonic()
    response = preview(renderer, HOSTILE[name])
    elapsed = time.monotonic() - started
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "render_limit", response.json()
    # Within its time limit, with room for a loaded machine: no single step ran long.
    assert elapsed < 2.0, f"{name} took {elapsed:.1f} s"


@pytest.mark.parametrize(
    "body", ['{{ "%s"|format("x" * 500000) }}', '{{ "{0:>999999999}".format(1) }}']
)
def test_string_formatting_is_refused_before_it_runs(renderer, body):
    response = preview(renderer, body)
    assert response.status_code == 400
    assert response.json()["code"] == "template_security"


def test_ordinary_templates_still_render(renderer):
    body = (
        "{% for item in items|sort(attribute='n') %}{{ item.label|title }} "
        "{{ item.n|number }}{{ ', ' if not loop.last }}{% endfor %} — "
        "{{ note|wordwrap(20) }} {{ ([name] * 3)|join('/') }} {{ 2 ** 10 }}"
    )
    data = {
        "items": [{"label": f"item {i}", "n": 50 - i} for i in range(50)],
        "note": "a few words that wrap " * 20,
        "name": "ada",
    }
    response = preview(renderer, body, **data)
    assert response.status_code == 200, response.content
    assert response.json()["body"].startswith("Item 49 1, Item 48 2")
    assert "ada/ada/ada 1024" in response.json()["body"]


def test_the_caller_data_counts_against_the_caps(renderer):
    response = preview(renderer, "{{ rows|sort|length }}", rows=list(range(20_000)))
    assert response.json()["code"] == "render_limit"


def test_a_render_that_overruns_its_time_limit_stops_quickly(renderer, settings):
    settings.TEMPLATES_TIME_LIMIT = 0.3
    settings.TEMPLATES_MAX_ITERATIONS = 10**9
    started = time.monotonic()
    response = preview(renderer, HOSTILE["nested loops"])
    assert response.json()["code"] == "render_limit"
    assert "took longer than 0.3 s" in response.json()["detail"]
    assert time.monotonic() - started < 1.5


def test_every_missing_variable_is_named_in_fields(templates, make_service_token):
    template = templates.create(
        key="welcome",
        channel="in_app",
        variables=[
            {"name": "first_name", "type": "string"},
            {"name": "plan", "type": "string"},
            {"name": "renews_on", "type": "date"},
            {"name": "coupon", "type": "string", "required": False},
        ],
    )
    templates.live(template, title="Hi {{ first_name }}", body="{{ plan }} {{ renews_on }}")
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_service_token('billing', ['templates:render'])}"
    )
    response = client.post(
        "/api/v1/templates/render", {"template": "welcome", "data": {"plan": "pro"}}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "missing_variable"
    assert set(body["fields"]) == {"first_name", "renews_on"}
    assert "'first_name'" in body["detail"] and "'renews_on'" in body["detail"]


# ------------------------------------------------------------------------------- the executor


def test_a_full_executor_refuses_at_once_and_frees_its_room():
    pool = RenderExecutor(threads=1, queue=1)
    release = threading.Event()
    results: list[object] = []

    def hold():
        release.wait(10)
        return "done"

    def run_one():
        results.append(pool.run(hold, 10.0))

    holders = [threading.Thread(target=run_one) for _ in range(2)]
    for thread in holders:
        thread.start()
    wait_for(lambda: pool.stats()["pending"] == 2, 5, what="a full executor")
    started = time.monotonic()
    with pytest.raises(errors.RenderBusyError):
        pool.run(hold, 10.0)
    assert time.monotonic() - started < 1.0
    release.set()
    for thread in holders:
        thread.join(10)
    assert results == ["done", "done"]
    assert pool.stats()["pending"] == 0
    assert pool.run(lambda: "again", 1.0) == "again"


def test_a_caller_stops_waiting_for_a_render_that_overran():
    pool = RenderExecutor(threads=1, queue=0)
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(errors.RenderLimitError):
        pool.run(lambda: release.wait(30), 0.2)
    assert time.monotonic() - started < 2.0
    # The overrunning render keeps its place until it ends: the executor is observably full.
    assert pool.stats()["pending"] == 1
    with pytest.raises(errors.RenderBusyError):
        pool.run(lambda: "no room", 0.2)
    release.set()
    wait_for(lambda: pool.stats()["pending"] == 0, 5, what="the render to end")


# ------------------------------------------------------------------------------- a live server

TIME_LIMIT = 3.0


@pytest.fixture(scope="module")
def slow_renders_server(django_db_setup, tmp_path_factory):
    """uvicorn with long render time limits, so hostile renders hold the executor a while."""
    port = free_port()
    log = tmp_path_factory.mktemp("asgi-render") / "asgi.log"
    env = process_env(
        TEMPLATES_TIME_LIMIT=TIME_LIMIT,
        TEMPLATES_MAX_ITERATIONS=10**9,
        TEMPLATES_RENDER_THREADS=2,
        TEMPLATES_RENDER_QUEUE=2,
        WEB_THREADS=8,
    )
    with open(log, "w") as fh:
        proc = subprocess.Popen(server_argv(port, host="127.0.0.1"), env=env, stdout=fh, stderr=fh)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health/live", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(up, 60, what="uvicorn")
        yield url
    finally:
        _stop(proc)


def _call(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_me_answers_while_eight_hostile_renders_hold_the_executor(
    slow_renders_server, make_service_token, make_user_token
):
    service = make_service_token("cms", ["templates:manage", "templates:render"])
    user = make_user_token("alice", email="alice@example.com")
    hostile = {"channel": "in_app", "title": "t", "body": HOSTILE["nested loops"]}
    answers: list[tuple[int, dict]] = []

    def send_hostile():
        answers.append(_call(f"{slow_renders_server}/api/v1/templates/preview", service, hostile))

    threads = [threading.Thread(target=send_hostile) for _ in range(8)]
    for thread in threads:
        thread.start()
    # Two renders run and two wait: the other four are refused at once, so the executor is full.
    wait_for(lambda: len(answers) >= 4, 10, what="the renders beyond the executor's room")
    assert [a[1]["code"] for a in answers] == ["render_busy"] * 4
    assert all(a[0] == 503 for a in answers)

    started = time.monotonic()
    status, me = _call(f"{slow_renders_server}/api/v1/me", user)
    elapsed = time.monotonic() - started
    still_running = 8 - len(answers)
    assert status == 200 and me["user_id"] == "alice", me
    assert elapsed < 1.0, f"GET /api/v1/me took {elapsed:.1f} s"
    assert still_running == 4, "the hostile renders ended before GET /api/v1/me was asked"

    for thread in threads:
        thread.join(4 * TIME_LIMIT + 10)
    limited = [a for a in answers if a[1]["code"] != "render_busy"]
    assert [(a[0], a[1]["code"]) for a in limited] == [(400, "render_limit")] * 4
