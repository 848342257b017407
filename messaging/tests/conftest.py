from __future__ import annotations

import contextlib
import json
import os
import time

import pytest
from django.conf import settings
from rest_framework.test import APIClient
from websockets.sync.client import connect

from communication.auth import tokens
from communication.models import User


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    # Our own test database when TEST_DATABASE_NAME is set (several checkouts share one server);
    # the settings no longer read it, so these tests do.
    name = os.environ.get("TEST_DATABASE_NAME")
    if name:
        settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = name


def make_user(name: str, **extra) -> User:
    return User.objects.create(
        username=name, external_id=name, email=f"{name}@example.com", name=name.title(), **extra
    )


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def carol(db):
    return make_user("carol")


@pytest.fixture
def agent(db):
    return make_user("agent", roles=["support_agent"])


@pytest.fixture
def as_user():
    def make(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_user_token(user)}")
        return client

    return make


def create_conversation(client, type_="direct", participants=("bob",), **extra):
    response = client.post(
        "/api/v1/conversations",
        {"type": type_, "participants": list(participants), **extra},
        format="json",
    )
    assert response.status_code in (200, 201), response.content
    return response.json()


def post_message(client, conversation_id, content="hi", **extra):
    response = client.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        {"content": content, **extra},
        format="json",
    )
    assert response.status_code in (200, 201), response.content
    return response.json()


def recv_until(ws, predicate, timeout=5.0):
    """The first event matching ``predicate`` within ``timeout``; skips the others."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no matching event")
        event = json.loads(ws.recv(timeout=left))
        if predicate(event):
            return event


def of_type(kind):
    return lambda e: e.get("type") == kind


def drain(ws, quiet=0.3) -> list[dict]:
    """Every event that arrives until ``quiet`` seconds pass without one."""
    events = []
    while True:
        try:
            events.append(json.loads(ws.recv(timeout=quiet)))
        except TimeoutError:
            return events


@contextlib.contextmanager
def sockets(server, users):
    """Websockets of ``users`` on a live ``server``, each past its ``ready``."""
    with contextlib.ExitStack() as stack:
        opened = []
        for user in users:
            ws = stack.enter_context(
                connect(f"{server.ws_url}/ws/v1/?token={tokens.issue_user_token(user)}")
            )
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            opened.append(ws)
        yield opened
