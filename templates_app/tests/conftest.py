"""Personas and helpers for the template tests.

- ``editor``: the service that writes templates (``templates:manage``, client ``cms``);
- ``reviewer``: another service with ``templates:manage`` (client ``cms-review``);
- ``sender``: a service that renders (``notifications:send``);
- ``staff``: a staff user's client; ``alice`` (``user_client``) is a plain user.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from templates_app import engine, selectors, services


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def editor(make_service_token):
    return _client(make_service_token("cms", ["templates:manage"]))


@pytest.fixture
def reviewer(make_service_token):
    return _client(make_service_token("cms-review", ["templates:manage"]))


@pytest.fixture
def sender(make_service_token):
    return _client(make_service_token("billing", ["notifications:send"]))


@pytest.fixture
def staff(make_user_token):
    return _client(make_user_token("root", staff=True, email="root@example.com"))


@pytest.fixture(autouse=True)
def _fresh_counters():
    selectors.source_cache_counter.reset()
    engine.compiled_cache.clear()


class Templates:
    """Makes templates and gets versions live through the services, as people would."""

    author = "service:cms"
    approver = "service:cms-review"

    def __init__(self, capture):
        # Cache invalidation runs on commit, which a test's transaction never does: run the
        # callbacks as the commit would.
        self.capture = capture

    def create(self, key="order-shipped", channel="sms", variables=None, **kwargs):
        kwargs.setdefault("category", "transactional")
        kwargs.setdefault("name", key.replace("-", " ").title())
        return services.template_create(
            actor=self.author,
            key=key,
            channel=channel,
            variables=variables if variables is not None else [],
            **kwargs,
        )

    def live(self, template, language="en", variant=None, **sources):
        """A version written, submitted and approved: live for ``language``."""
        version = services.version_create(
            template=template, actor=self.author, language=language, variant=variant, **sources
        )
        services.version_submit(version=version, actor=self.author)
        with self.capture(execute=True):
            return services.version_approve(version=version, actor=self.approver)


@pytest.fixture
def templates(db, django_capture_on_commit_callbacks):
    return Templates(django_capture_on_commit_callbacks)


@pytest.fixture
def committing(django_capture_on_commit_callbacks):
    """``with committing():`` runs the on_commit callbacks (cache invalidation) of its block."""
    return lambda: django_capture_on_commit_callbacks(execute=True)
